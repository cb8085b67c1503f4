//! Request parameters from the query string and a form body, in order of appearance.

use bytes::Bytes;

/// Decoded `name=value` pairs of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// The query string, then an `application/x-www-form-urlencoded` body.
    pub fn new(query: Option<&str>, content_type: Option<&str>, body: &Bytes) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params { pairs }
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_body() {
        let body = Bytes::from_static(b"b=2&name=x%20y");
        let p = Params::new(
            Some("name=a&name=b%2Cc&e="),
            Some("application/x-www-form-urlencoded"),
            &body,
        );
        assert_eq!(p.all("name"), ["a", "b,c", "x y"]);
        assert_eq!(p.get("name"), Some("x y"));
        assert_eq!(p.get("e"), Some(""));
        assert_eq!(p.get("nope"), None);
        let p = Params::new(None, Some("application/json"), &body);
        assert_eq!(p.get("b"), None, "only form bodies are parameters");
    }
}
