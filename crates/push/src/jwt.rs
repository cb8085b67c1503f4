//! JSON Web Tokens signed with the service's key: ES256 for APNs provider tokens and VAPID,
//! RS256 for the FCM service-account assertion. Keys come as PKCS#8 PEM (Apple's `.p8`, Google's
//! `private_key`, `openssl genpkey`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// A private key that signs JWTs.
pub enum Key {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// The DER of the first private key in `pem`.
fn pkcs8(pem: &str) -> Result<Vec<u8>, String> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(k))) => Ok(k.secret_pkcs8_der().to_vec()),
        Ok(Some(_)) => Err("the key is not in PKCS#8 form (BEGIN PRIVATE KEY); convert it with `openssl pkcs8 -topk8 -nocrypt`".into()),
        Ok(None) => Err("no private key in the PEM text".into()),
        Err(e) => Err(format!("unreadable PEM: {e}")),
    }
}

impl Key {
    /// A P-256 key (APNs, VAPID).
    pub fn es256(pem: &str) -> Result<Key, String> {
        let der = pkcs8(pem)?;
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
            .map(Key::Es256)
            .map_err(|e| format!("not a P-256 (ES256) private key: {e}"))
    }

    /// An RSA key (FCM service account).
    pub fn rs256(pem: &str) -> Result<Key, String> {
        let der = pkcs8(pem)?;
        RsaKeyPair::from_pkcs8(&der)
            .map(Key::Rs256)
            .map_err(|e| format!("not an RSA (RS256) private key: {e}"))
    }

    /// The public key: the uncompressed point of a P-256 key, the DER RSAPublicKey of an RSA one.
    pub fn public(&self) -> &[u8] {
        match self {
            Key::Es256(k) => k.public_key().as_ref(),
            Key::Rs256(k) => k.public().as_ref(),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Es256(_) => "ES256",
            Key::Rs256(_) => "RS256",
        }
    }

    /// `header.claims.signature`, the header's `alg` set from the key; `extra` adds to the header
    /// (`kid`, `typ`).
    pub fn sign(
        &self,
        extra: &[(&str, &str)],
        claims: &serde_json::Value,
    ) -> Result<String, String> {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), self.alg().into());
        for (k, v) in extra {
            header.insert((*k).into(), (*v).into());
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::Value::Object(header).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Es256(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|e| format!("ES256 signing failed: {e}"))?
                .as_ref()
                .to_vec(),
            Key::Rs256(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|e| format!("RS256 signing failed: {e}"))?;
                sig
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Seconds since the epoch, for `iat` and `exp`.
pub fn now_secs() -> u64 {
    (bkjs_base::time::now_ms() / 1000).max(0) as u64
}
