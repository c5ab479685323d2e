//! One server: the shared client, the API root, the key, and how to name them in
//! messages without leaking the key.

use reqwest::Url;

use crate::Error;

/// Where requests of one provider go.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub client: reqwest::Client,
    /// The API root without a trailing slash.
    base: String,
    key: Option<String>,
    pub name: &'static str,
}

impl Endpoint {
    pub fn new(client: reqwest::Client, base_url: &str, key: Option<String>, name: &'static str) -> Result<Endpoint, Error> {
        let base = check_base_url(base_url)?;
        let key = key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        if key.as_ref().is_some_and(|k| k.bytes().any(|b| b.is_ascii_control() || !b.is_ascii())) {
            return Err(Error::ApiKey);
        }
        Ok(Endpoint { client, base, key, name })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path)
    }

    /// A request to `path` under the root, with the key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// `path` under the root as messages show it (no credentials, no query).
    pub fn shown(&self, path: &str) -> String {
        display_url(&self.url(path))
    }

    /// `message` with the key (and anything shaped like an OpenAI key) blanked out.
    pub fn redact(&self, message: &str) -> String {
        redact(message, self.key.as_deref())
    }
}

/// Checks an API root and returns it without a trailing slash.
pub(crate) fn check_base_url(raw: &str) -> Result<String, Error> {
    let bad = |reason: &str| Error::BaseUrl { url: display_url(raw), reason: reason.to_string() };
    let url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not accepted; give the key as the API key"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// A URL as messages may show it: credentials, query and fragment removed.
pub fn display_url(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => {
            let cut: String = raw.chars().take(80).filter(|c| !c.is_control()).collect();
            format!("{cut:?} (not a URL)")
        }
    }
}

/// Whether two API roots are on the same scheme, host and port.
pub(crate) fn same_origin(a: &str, b: &str) -> bool {
    match (Url::parse(a), Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// Whether the root is OpenAI's own API.
pub(crate) fn is_openai(base: &str) -> bool {
    Url::parse(base).is_ok_and(|u| u.host_str() == Some("api.openai.com"))
}

/// Blanks out `key` and every word that looks like an OpenAI key (`sk-...`, which
/// OpenAI echoes, masked, in its 401 messages).
pub(crate) fn redact(message: &str, key: Option<&str>) -> String {
    let mut out = match key {
        Some(k) if !k.is_empty() => message.replace(k, "[redacted]"),
        _ => message.to_string(),
    };
    if out.contains("sk-") {
        out = out
            .split_inclusive(char::is_whitespace)
            .map(|word| match word.find("sk-") {
                Some(at) if at == 0 || !word.as_bytes()[at - 1].is_ascii_alphanumeric() => {
                    let tail = &word[word.trim_end().len()..];
                    format!("{}sk-[redacted]{tail}", &word[..at])
                }
                _ => word.to_string(),
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_key_and_masked_openai_keys() {
        let msg = "Incorrect API key provided: sk-proj-abc*****wxyz. You can find your key; raw=secret-123.";
        let out = redact(msg, Some("secret-123"));
        assert!(!out.contains("abc*****wxyz"), "{out}");
        assert!(!out.contains("secret-123"), "{out}");
        assert!(out.starts_with("Incorrect API key provided: sk-[redacted]"), "{out}");
        assert!(out.contains("You can find your key"), "{out}");
        // words merely containing "sk-" after a letter are left alone
        assert_eq!(redact("task-list ok", None), "task-list ok");
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(check_base_url("https://api.openai.com/v1/").unwrap(), "https://api.openai.com/v1");
        assert_eq!(check_base_url("http://127.0.0.1:8080/v1").unwrap(), "http://127.0.0.1:8080/v1");
        for bad in ["", "api.openai.com/v1", "ftp://x/v1", "https://u:p@host/v1", "https://h/v1?x=1", "http://", "\u{0}"] {
            let err = check_base_url(bad).unwrap_err();
            assert!(matches!(err, Error::BaseUrl { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("u:p"), "{err}");
        }
    }

    #[test]
    fn display_url_drops_credentials_and_queries() {
        assert_eq!(display_url("https://user:pw@h.example/v1?key=k"), "https://h.example/v1");
        assert!(display_url(&"x".repeat(10_000)).len() < 120);
    }
}
