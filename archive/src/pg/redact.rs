//! A server's URL as errors and logs may show it: the password masked,
//! in the URI form (`postgresql://user:secret@host/db?password=secret`)
//! and the key-value form (`host=h password='se cret'`) alike.

/// What a password is shown as.
const MASK: &str = "***";
/// The URI schemes the driver accepts.
const SCHEMES: [&str; 2] = ["postgresql://", "postgres://"];
/// Shortest password that [`scrub`] looks for in a message: a shorter
/// one would mask ordinary words, and a message that quotes a password
/// at all is already unusual.
const SCRUB_PASSWORD_BYTES_MIN: usize = 4;

/// `url` with any password replaced by `***`; the rest (user, hosts,
/// ports, database, options) kept so an error says where it went.
pub fn redact(url: &str) -> String {
    for scheme in SCHEMES {
        if let Some(rest) = url.strip_prefix(scheme) {
            return format!("{scheme}{}", redact_uri(rest));
        }
    }
    redact_key_value(url)
}

/// `text` with every occurrence of `password` masked: the last guard on
/// a driver message that might quote what it was given.
pub(crate) fn scrub(text: String, password: Option<&[u8]>) -> String {
    let Some(secret) = password.and_then(|p| std::str::from_utf8(p).ok()) else {
        return text;
    };
    if secret.len() < SCRUB_PASSWORD_BYTES_MIN || !text.contains(secret) {
        return text;
    }
    text.replace(secret, MASK)
}

/// The URI after its scheme. The user information ends at the last `@`
/// before the query, so a password holding a raw `/` or `@` is masked
/// whole (at worst a database name holding `@` is masked too).
fn redact_uri(rest: &str) -> String {
    let (head, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(rest.len());
    match head.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            out.push_str(hosts);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some(("password", _)) => format!("password={MASK}"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// The key-value form: `key = value` pairs, values bare or single-quoted
/// with backslash escapes, as libpq reads them. Malformed text is copied
/// as it is, except a `password` value.
fn redact_key_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Every pass consumes at least one byte (a key, an `=`, or a value),
    // so this ends within `text.len()` passes.
    while !rest.is_empty() {
        rest = copy_space(rest, &mut out);
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let (key, after_key) = rest.split_at(key_len);
        out.push_str(key);
        rest = copy_space(after_key, &mut out);
        let Some(after_eq) = rest.strip_prefix('=') else {
            continue;
        };
        out.push('=');
        rest = copy_space(after_eq, &mut out);
        let (value, after_value) = rest.split_at(value_len(rest));
        out.push_str(if key == "password" { MASK } else { value });
        rest = after_value;
    }
    out
}

/// Copies leading whitespace of `s` to `out`; returns what follows it.
fn copy_space<'a>(s: &'a str, out: &mut String) -> &'a str {
    let trimmed = s.trim_start();
    out.push_str(&s[..s.len() - trimmed.len()]);
    trimmed
}

/// Bytes of the value at the start of `s`: a quoted one through its
/// closing quote (or to the end if unclosed), a bare one to whitespace.
fn value_len(s: &str) -> usize {
    let Some(quoted) = s.strip_prefix('\'') else {
        return s.find(char::is_whitespace).unwrap_or(s.len());
    };
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '\'') => return 1 + i + 1,
            (false, _) => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_password_is_masked_and_the_rest_kept() {
        assert_eq!(
            redact("postgresql://switch:s3cret@db.example:5433/archive?connect_timeout=3"),
            "postgresql://switch:***@db.example:5433/archive?connect_timeout=3"
        );
        assert_eq!(
            redact("postgres://switch@127.0.0.1/archive"),
            "postgres://switch@127.0.0.1/archive"
        );
        assert_eq!(redact("postgresql:///archive"), "postgresql:///archive");
    }

    #[test]
    fn uri_password_with_reserved_characters_is_masked_whole() {
        for url in [
            "postgresql://u:pa/ss@h/db",
            "postgresql://u:p@ss@h/db",
            "postgresql://u:p%40ss@h/db",
        ] {
            let shown = redact(url);
            assert_eq!(shown, "postgresql://u:***@h/db", "{url}");
        }
    }

    #[test]
    fn uri_password_parameter_is_masked() {
        assert_eq!(
            redact("postgresql://u@h/db?sslmode=disable&password=s3cret&user=u"),
            "postgresql://u@h/db?sslmode=disable&password=***&user=u"
        );
    }

    #[test]
    fn key_value_password_is_masked() {
        assert_eq!(
            redact("host=h user=u password=s3cret dbname=db"),
            "host=h user=u password=*** dbname=db"
        );
        assert_eq!(
            redact("host=h password = 'se cr\\'et' dbname=db"),
            "host=h password = *** dbname=db"
        );
        assert_eq!(redact("password='unclosed"), "password=***");
    }

    #[test]
    fn malformed_text_is_copied_without_a_panic() {
        for text in ["", "=", "host", "host=", " = = ", "a=b=c", "'", "password"] {
            assert!(!redact(text).contains("secret"), "{text}");
        }
        assert_eq!(redact("host h=1"), "host h=1");
    }

    #[test]
    fn scrub_masks_a_quoted_password_only_when_long_enough() {
        let msg = "bad password s3cret for u".to_owned();
        assert_eq!(
            scrub(msg.clone(), Some(b"s3cret")),
            "bad password *** for u"
        );
        assert_eq!(scrub(msg.clone(), Some(b"u")), msg);
        assert_eq!(scrub(msg.clone(), None), msg);
    }
}
