//! Fake resources, prompts and completions.
//!
//! Small and predictable on purpose: gateway tests assert on exact strings
//! (`"static"`, `"item 7"`, `"Hello, ada!"`).

use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptRequestParams, GetPromptResult,
    Prompt, PromptArgument, PromptMessage, ReadResourceResult, Reference, Resource,
    ResourceContents, ResourceTemplate, Role,
};
use rmcp::ErrorData;
use serde_json::json;

const STATIC: &str = "fake://static";
const ITEM_TEMPLATE: &str = "fake://item/{id}";
const ITEM_PREFIX: &str = "fake://item/";
const GREET: &str = "greet";
const NAMES: [&str; 2] = ["alice", "bob"];

/// Returns the concrete resources.
pub(super) fn resources() -> Vec<Resource> {
    vec![Resource::new(STATIC, "static")
        .with_description("Always reads as the text \"static\"")
        .with_mime_type("text/plain")]
}

/// Returns the resource templates.
pub(super) fn resource_templates() -> Vec<ResourceTemplate> {
    vec![ResourceTemplate::new(ITEM_TEMPLATE, "item")
        .with_description("Reads as \"item {id}\"")
        .with_mime_type("text/plain")]
}

/// Reads `uri`; unknown URIs are `-32002` (resource not found).
pub(super) fn read_resource(uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let text = if uri == STATIC {
        "static".to_owned()
    } else if let Some(id) = uri.strip_prefix(ITEM_PREFIX).filter(|id| !id.is_empty()) {
        format!("item {id}")
    } else {
        return Err(ErrorData::resource_not_found(
            format!("resource {uri:?} not found"),
            Some(json!({ "uri": uri })),
        ));
    };
    Ok(ReadResourceResult::new(vec![ResourceContents::text(
        text, uri,
    )
    .with_mime_type("text/plain")]))
}

/// Returns the prompts.
pub(super) fn prompts() -> Vec<Prompt> {
    vec![Prompt::new(
        GREET,
        Some("Greets someone by name"),
        Some(vec![PromptArgument::new("name")
            .with_description("Who to greet")
            .with_required(true)]),
    )]
}

/// Renders `greet`; a missing `name` or an unknown prompt is `-32602`.
pub(super) fn get_prompt(request: &GetPromptRequestParams) -> Result<GetPromptResult, ErrorData> {
    if request.name != GREET {
        return Err(ErrorData::invalid_params(
            format!("unknown prompt {:?}", request.name),
            None,
        ));
    }
    let name = request
        .arguments
        .as_ref()
        .and_then(|args| args.get("name"))
        .and_then(|value| value.as_str())
        .ok_or_else(|| ErrorData::invalid_params("prompt greet needs argument name", None))?;
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(
        Role::User,
        format!("Hello, {name}!"),
    )]))
}

/// Completes `greet`'s `name` from a fixed list, filtered by prefix.
pub(super) fn complete(request: &CompleteRequestParams) -> Result<CompleteResult, ErrorData> {
    let candidates: &[&str] = match (&request.r#ref, request.argument.name.as_str()) {
        (Reference::Prompt(prompt), "name") if prompt.name == GREET => &NAMES,
        _ => &[],
    };
    let values = candidates
        .iter()
        .filter(|name| name.starts_with(&request.argument.value))
        .map(|name| (*name).to_owned())
        .collect();
    let info = CompletionInfo::new(values).map_err(|e| ErrorData::internal_error(e, None))?;
    Ok(CompleteResult::new(info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ArgumentInfo;

    #[test]
    fn items_read_back_their_id() {
        let result = read_resource("fake://item/7").unwrap();
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["contents"][0]["text"], "item 7");
        assert!(read_resource("fake://item/").is_err());
    }

    #[test]
    fn completion_filters_by_prefix() {
        let request = CompleteRequestParams::new(
            Reference::for_prompt(GREET),
            ArgumentInfo::new("name", "a"),
        );
        let result = complete(&request).unwrap();
        assert_eq!(result.completion.values, vec!["alice".to_owned()]);
    }
}
