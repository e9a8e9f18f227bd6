//! `${env:NAME}`, `${file:PATH}` and `${self}` substitution in config strings.

/// What a `${...}` reference may read.
pub(crate) struct Context<'a> {
    pub(crate) env: &'a dyn Fn(&str) -> Option<String>,
    /// The running binary, for configs that spawn `switchboard` itself.
    pub(crate) self_exe: &'a str,
}

/// Replaces every `${kind:arg}` in `input`. `$$` stands for a literal `$`.
///
/// Errors name the reference, never the secret it resolved to.
pub(crate) fn interpolate(input: &str, ctx: &Context<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!(
                "unterminated reference in {input:?}: expected '}}'"
            ));
        };
        let reference = &body[..end];
        out.push_str(&resolve(reference, ctx)?);
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str, ctx: &Context<'_>) -> Result<String, String> {
    if reference == "self" {
        return Ok(ctx.self_exe.to_owned());
    }
    match reference.split_once(':') {
        Some(("env", name)) => (ctx.env)(name).ok_or_else(|| {
            format!("environment variable {name} is not set (referenced as ${{env:{name}}})")
        }),
        Some(("file", path)) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| {
                format!("cannot read secret file {path} (referenced as ${{file:{path}}}): {e}")
            }),
        _ => Err(format!(
            "unknown reference ${{{reference}}}: use ${{env:NAME}}, ${{file:PATH}} or ${{self}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn references_are_replaced_and_dollars_escape() {
        let env = ctx_with(&[("TOKEN", "abc")]);
        let ctx = Context {
            env: &env,
            self_exe: "/bin/sb",
        };
        assert_eq!(
            interpolate("Bearer ${env:TOKEN}", &ctx).unwrap(),
            "Bearer abc"
        );
        assert_eq!(interpolate("${self} x", &ctx).unwrap(), "/bin/sb x");
        assert_eq!(
            interpolate("cost $$5 and $x", &ctx).unwrap(),
            "cost $5 and $x"
        );
    }

    #[test]
    fn a_secret_file_is_read_without_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "s3cret\n").unwrap();
        let env = ctx_with(&[]);
        let ctx = Context {
            env: &env,
            self_exe: "",
        };
        assert_eq!(
            interpolate(&format!("${{file:{}}}", p.display()), &ctx).unwrap(),
            "s3cret"
        );
    }

    #[test]
    fn bad_references_name_themselves() {
        let env = ctx_with(&[]);
        let ctx = Context {
            env: &env,
            self_exe: "",
        };
        assert!(interpolate("${env:NOPE}", &ctx)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(interpolate("${vault:x}", &ctx)
            .unwrap_err()
            .contains("unknown reference ${vault:x}"));
        assert!(interpolate("${env:X", &ctx)
            .unwrap_err()
            .contains("unterminated"));
    }
}
