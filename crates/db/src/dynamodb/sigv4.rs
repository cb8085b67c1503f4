//! AWS Signature Version 4, written by hand so the driver needs no AWS SDK: the canonical request,
//! the string to sign and the derived signing key of the AWS documentation ("Create a signed AWS
//! API request"), for the few requests the DynamoDB client sends (a `POST /` with a JSON body and
//! no query string, though the signer handles any path and query already encoded).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The access key pair a request is signed with. The secret is never logged: `Debug` hides it.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) key: String,
    pub(crate) secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// What a request signature covers.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The URI path, already URI-encoded (`/` for DynamoDB).
    pub(crate) path: &'a str,
    /// The canonical query string (parameters sorted and encoded), empty for none.
    pub(crate) query: &'a str,
    /// Headers to sign as (lower-case name, value); `host` and `x-amz-date` must be among them.
    pub(crate) headers: &'a [(&'a str, &'a str)],
    pub(crate) body: &'a [u8],
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut m =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The `Authorization` header value of `req`, signed at `amz_date` (`YYYYMMDDTHHMMSSZ`, the
/// value of the request's `x-amz-date` header) for `service` in `region`.
pub(crate) fn authorization(
    creds: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
    req: &Request<'_>,
) -> String {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| {
            // Trimmed, with runs of spaces folded into one, as the canonical form wants.
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (n.to_ascii_lowercase(), v)
        })
        .collect();
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let mut canonical = format!("{}\n{}\n{}\n", req.method, req.path, req.query);
    for (n, v) in &headers {
        canonical.push_str(n);
        canonical.push(':');
        canonical.push_str(v);
        canonical.push('\n');
    }
    canonical.push('\n');
    canonical.push_str(&signed);
    canonical.push('\n');
    canonical.push_str(&sha256_hex(req.body));
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{}", creds.secret).as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        creds.key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials {
            key: "AKIDEXAMPLE".into(),
            secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    /// `post-vanilla` and `get-vanilla` of the AWS SigV4 test suite
    /// (https://docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html): the
    /// documented `Authorization` values, byte for byte.
    #[test]
    fn documented_test_suite_vectors() {
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let post = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            authorization(
                &example(),
                "us-east-1",
                "service",
                "20150830T123600Z",
                &post
            ),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        let get = Request {
            method: "GET",
            ..post
        };
        assert_eq!(
            authorization(&example(), "us-east-1", "service", "20150830T123600Z", &get),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert!(!format!("{:?}", example()).contains("EXAMPLEKEY"));
    }
}
