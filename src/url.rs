//! The little URL handling an IdP callout needs: scheme, authority and path of an absolute
//! `http`/`https` URL. A full URL crate would double the filter's size for this.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub https: bool,
    /// `host[:port]` as written: the `:authority` of a callout.
    pub authority: String,
    /// `host:port` with the scheme's default port filled in: the default upstream name.
    pub host_port: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(s: &str) -> Result<HttpUrl, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must be an http:// or https:// URL".into());
        };
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace".into());
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains('#') {
            return Err("must not contain a fragment".into());
        }
        if authority.is_empty() || authority.contains('@') {
            return Err("must have a host (and no user info)".into());
        }
        let (host, port) = split_port(authority)?;
        if host.is_empty() {
            return Err("must have a host".into());
        }
        let port = port.unwrap_or(if https { 443 } else { 80 });
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(HttpUrl {
            https,
            authority: authority.to_string(),
            host_port: format!("{host}:{port}"),
            path,
        })
    }
}

fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    // An IPv6 literal carries colons of its own: `[::1]:8080`.
    let port_sep = if authority.starts_with('[') {
        let close = authority.find(']').ok_or("unclosed IPv6 literal")?;
        authority
            .get(close + 1..)
            .and_then(|r| r.strip_prefix(':'))
            .map(|p| (close + 1, p))
    } else {
        authority
            .rfind(':')
            .map(|i| (i, authority.get(i + 1..).unwrap_or("")))
    };
    match port_sep {
        Some((i, port)) => {
            let port: u16 = port.parse().map_err(|_| format!("bad port `{port}`"))?;
            Ok((authority.get(..i).unwrap_or(""), Some(port)))
        }
        None => Ok((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_absolute_urls() {
        let u = HttpUrl::parse("https://dev-1.okta.com/oauth2/default/v1/token").unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "dev-1.okta.com");
        assert_eq!(u.host_port, "dev-1.okta.com:443");
        assert_eq!(u.path, "/oauth2/default/v1/token");

        let u = HttpUrl::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.host_port.as_str(), u.path.as_str()),
            ("127.0.0.1:9000", "127.0.0.1:9000", "/")
        );

        let u = HttpUrl::parse("http://[::1]:81/x?y=1").unwrap();
        assert_eq!(
            (u.host_port.as_str(), u.path.as_str()),
            ("[::1]:81", "/x?y=1")
        );
        assert_eq!(HttpUrl::parse("http://h?q").unwrap().path, "/?q");
        assert_eq!(
            HttpUrl::parse("http://[::1]/").unwrap().host_port,
            "[::1]:80"
        );
    }

    #[test]
    fn rejects_what_is_not_an_http_url() {
        for bad in [
            "",
            "idp",
            "ftp://h",
            "http://",
            "http://:80",
            "http://h:x",
            "http://h:99999",
            "http://u@h",
            "http://h/#f",
            "http://h /",
            "http://[::1",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
