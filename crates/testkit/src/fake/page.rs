//! Cursor pagination for `tools/list`.
//!
//! The cursor is the decimal index of the first item of the next page. It is
//! opaque to clients per the spec; a gateway must pass it back untouched, and
//! anything it invents is rejected with `-32602` as the spec requires.

use rmcp::ErrorData;

/// Cuts one page out of `items`, returning it with the next cursor.
///
/// `page_size: None` returns everything and never a cursor.
pub(super) fn slice<T>(
    items: Vec<T>,
    cursor: Option<&str>,
    page_size: Option<usize>,
) -> Result<(Vec<T>, Option<String>), ErrorData> {
    let start = match cursor {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|start| *start <= items.len() && page_size.is_some())
            .ok_or_else(|| ErrorData::invalid_params(format!("invalid cursor {text:?}"), None))?,
    };
    let Some(size) = page_size else {
        return Ok((items, None));
    };
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_walk_the_whole_list() {
        let items: Vec<u32> = (0..5).collect();
        let (first, next) = slice(items.clone(), None, Some(2)).unwrap();
        assert_eq!((first, next.as_deref()), (vec![0, 1], Some("2")));
        let (second, next) = slice(items.clone(), Some("2"), Some(2)).unwrap();
        assert_eq!((second, next.as_deref()), (vec![2, 3], Some("4")));
        let (last, next) = slice(items, Some("4"), Some(2)).unwrap();
        assert_eq!((last, next), (vec![4], None));
    }

    #[test]
    fn no_page_size_returns_everything() {
        let (all, next) = slice(vec![1, 2, 3], None, None).unwrap();
        assert_eq!((all, next), (vec![1, 2, 3], None));
    }

    #[test]
    fn bad_cursors_are_invalid_params() {
        for cursor in ["x", "-1", "99"] {
            let error = slice(vec![1, 2, 3], Some(cursor), Some(2)).unwrap_err();
            assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        }
        assert!(slice(vec![1], Some("0"), None).is_err());
    }
}
