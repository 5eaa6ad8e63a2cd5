//! URLs of the API: the base URL as given, then `v1`, then the route's
//! segments, each percent-encoded on its own (a folder name or token id
//! containing `/`, `#` or `?` stays one segment), then query pairs
//! (form-encoded, which is what the server's query parser reads).

use reqwest::Url;

use crate::{Error, Result};

/// Schemes this client speaks.
const SUPPORTED_SCHEMES: &[&str] = &["http", "https"];

/// Parses and checks the server's base URL, such as `http://127.0.0.1:8080`,
/// `https://sync.example.com` or `http://gateway/syncfolder/` (a path prefix
/// is kept).
pub(crate) fn parse_base(base_url: &str) -> Result<Url> {
    let url = Url::parse(base_url.trim())
        .map_err(|err| Error::InvalidUrl(format!("{base_url:?} is not a URL: {err}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        // not echoed: it holds a secret
        return Err(Error::InvalidUrl(
            "the base URL carries credentials: pass the token separately".to_owned(),
        ));
    }
    if !SUPPORTED_SCHEMES.contains(&url.scheme()) {
        return Err(Error::InvalidUrl(format!(
            "{base_url:?} uses {:?}; use http://host:port or https://host:port",
            url.scheme()
        )));
    }
    if url.cannot_be_a_base() || url.host_str().is_none() {
        return Err(Error::InvalidUrl(format!(
            "{base_url:?} has no host: use http://host:port"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidUrl(format!(
            "{base_url:?} has a query or fragment: give only scheme, host, port and path"
        )));
    }
    Ok(url)
}

/// `{base}/v1/{segments...}`, each segment percent-encoded.
pub(crate) fn route(base: &Url, segments: &[&str]) -> Result<Url> {
    for segment in segments {
        // the URL parser drops `.` and `..` segments and an empty one would
        // change the route: refuse them rather than call another route
        if segment.is_empty() || *segment == "." || *segment == ".." {
            return Err(Error::InvalidUrl(format!(
                "{segment:?} cannot be used as a folder name or id"
            )));
        }
    }
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| Error::InvalidUrl(format!("{base} cannot be a base URL")))?
        .pop_if_empty()
        .push("v1")
        .extend(segments);
    Ok(url)
}

/// [`route`] plus query pairs.
pub(crate) fn route_with_query(
    base: &Url,
    segments: &[&str],
    query: &[(&str, &str)],
) -> Result<Url> {
    let mut url = route(base, segments)?;
    url.query_pairs_mut().extend_pairs(query);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut decoded = Vec::new();
        let mut byte_idx = 0;
        while byte_idx < bytes.len() {
            if bytes[byte_idx] == b'%' {
                let hex = &text[byte_idx + 1..byte_idx + 3];
                decoded.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                byte_idx += 3;
            } else {
                decoded.push(bytes[byte_idx]);
                byte_idx += 1;
            }
        }
        String::from_utf8(decoded).expect("utf-8")
    }

    fn form_decode(text: &str) -> String {
        percent_decode(&text.replace('+', " "))
    }

    fn base() -> Url {
        parse_base("http://127.0.0.1:8080").expect("valid base")
    }

    #[test]
    fn routes_are_under_v1_with_or_without_a_trailing_slash() {
        for base_url in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/"] {
            let base = parse_base(base_url).expect("valid base");
            let url = route(&base, &["folders", "docs", "changes"]).expect("route");
            assert_eq!(
                url.as_str(),
                "http://127.0.0.1:8080/v1/folders/docs/changes"
            );
        }
    }

    #[test]
    fn a_path_prefix_in_the_base_url_is_kept() {
        for base_url in ["http://gw/sync", "http://gw/sync/"] {
            let base = parse_base(base_url).expect("valid base");
            let url = route(&base, &["admin", "folders"]).expect("route");
            assert_eq!(url.as_str(), "http://gw/sync/v1/admin/folders");
        }
    }

    #[test]
    fn https_base_urls_keep_their_scheme() {
        let base = parse_base("https://sync.example.com/prefix").expect("valid base");
        let url = route(&base, &["folders", "docs"]).expect("route");
        assert_eq!(
            url.as_str(),
            "https://sync.example.com/prefix/v1/folders/docs"
        );
    }

    #[test]
    fn folder_names_stay_one_segment_whatever_they_contain() {
        for name in [
            "a b",
            "a/b",
            "x#y",
            "what?",
            "100%",
            "日本語",
            "a+b&c=d",
            "..a",
            "back\\slash",
        ] {
            let url = route(&base(), &["folders", name]).expect("route");
            let segments: Vec<&str> = url.path_segments().expect("has a path").collect();
            assert_eq!(segments.len(), 3, "{name:?} became {url}");
            assert_eq!(percent_decode(segments[2]), name, "{url}");
            assert!(url.query().is_none() && url.fragment().is_none(), "{url}");
        }
    }

    #[test]
    fn names_that_would_change_the_route_are_refused() {
        for name in ["", ".", ".."] {
            assert!(matches!(
                route(&base(), &["folders", name]),
                Err(Error::InvalidUrl(_))
            ));
        }
    }

    #[test]
    fn query_values_round_trip_through_form_decoding() {
        for path in [
            "a b/c d.txt",
            "x#y?z=1&w=2",
            "ünïcødé/日本語.md",
            "plus+sign",
            "100%/done",
        ] {
            let url = route_with_query(&base(), &["folders", "f", "history"], &[("path", path)])
                .expect("route");
            assert!(url.fragment().is_none(), "{url}");
            let query = url.query().expect("has a query");
            let (key, value) = query.split_once('=').expect("one pair");
            assert_eq!(key, "path");
            assert!(!value.contains(['&', '#', '?', ' ', '/']), "{query}");
            assert_eq!(form_decode(value), path);
        }
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_reason() {
        for base_url in [
            "127.0.0.1:8080",
            "not a url",
            "ftp://host",
            "http://host/?x=1",
            "http://user:secret@host",
            "mailto:someone@example.com",
        ] {
            let err = parse_base(base_url).expect_err(base_url);
            assert!(matches!(err, Error::InvalidUrl(_)), "{base_url}: {err}");
        }
    }
}
