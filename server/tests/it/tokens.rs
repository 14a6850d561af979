//! Access tokens as others see them: verified by two independent JOSE libraries against the
//! JWKS route, still accepted after a key rotation made by another process, and the tokens of
//! an external OpenID Connect issuer accepted with its algorithms pinned.

use axum::Json;
use axum::routing::get;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server::testing::{Setup, TestApp, TestData, event_position};

/// Runs `scripts/verify-jwt.py` (PyJWT and jwcrypto) on `token` against the server's JWKS:
/// answers the claims each library verified, or `Err` with why they refused it; `None` when
/// the libraries are missing (the test is then skipped, or fails with
/// `MERCATO_REQUIRE_SERVICES=1`).
fn verify_with_python(
    test_name: &str,
    jwks_url: &str,
    token: &str,
) -> Option<Result<Vec<Value>, String>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/verify-jwt.py");
    let output = std::process::Command::new("python3")
        .args([script, jwks_url, token])
        .output()
        .expect("run python3");
    match output.status.code() {
        Some(0) => Some(Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect())),
        Some(2) => {
            eventstore::testing::skip_or_fail(
                test_name,
                &format!(
                    "PyJWT or jwcrypto is missing ({}); scripts/test-setup installs them",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            );
            None
        }
        _ => Some(Err(String::from_utf8_lossy(&output.stderr).into_owned())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_verify_with_independent_jose_libraries_against_the_jwks() {
    let test_name = "jwks_python";
    let Some(data) = TestData::new(Setup::Embedded, test_name).await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let ann = server.register_customer("ann").await;
    let jwks_url = server.url("/.well-known/jwks.json");
    let jwks: Value = server
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("json");
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA")),
        "{jwks}"
    );
    let token = ann.session.access_token.clone();
    let Some(verified) = verify_with_python(test_name, &jwks_url, &token) else {
        return;
    };
    let verified = verified.unwrap_or_else(|error| panic!("the token was refused: {error}"));
    assert_eq!(verified.len(), 2, "PyJWT and jwcrypto: {verified:?}");
    for library in &verified {
        assert_eq!(library["claims"]["sub"], ann.user_id.as_str(), "{library}");
        assert_eq!(library["claims"]["kind"], "customer", "{library}");
        assert_eq!(library["claims"]["iss"], "mercato", "{library}");
    }
    // A token changed by one character is refused by both.
    let mut tampered = token.clone();
    let last = tampered.pop().expect("a character");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert!(
        verify_with_python(test_name, &jwks_url, &tampered)
            .expect("the libraries are there")
            .is_err(),
        "a tampered token verified"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_key_rotation_old_tokens_still_work_and_the_new_key_is_trusted_at_once() {
    let Some(data) = TestData::new(Setup::PostgresRedis, "key_rotation").await else {
        return;
    };
    let server = TestApp::start(&data).await;
    let bob = server.register_customer("bob").await;
    let old_token = bob.session.access_token.clone();
    let old_kid = jsonwebtoken::decode_header(&old_token).expect("header").kid;
    // Another process (an operator's `mercato signing-keys rotate`) rotates the keys.
    let keys = server::platform::open_signing_keys(&data.config("all", &[]))
        .await
        .expect("the signing keys");
    let new_kid = keys.rotate().await.expect("rotate");
    assert_ne!(Some(new_kid.clone()), old_kid);
    // A token of the new key works at once (the server reads the keys again for an unknown kid).
    let now = chrono::Utc::now().timestamp();
    let signed_by_new = keys
        .sign(&identity::signing::AccessClaims {
            iss: "mercato".to_owned(),
            aud: "mercato".to_owned(),
            sub: bob.user_id.clone(),
            iat: now,
            exp: now + 300,
            jti: "rotation".to_owned(),
            sid: "rotation".to_owned(),
            kind: "customer".to_owned(),
            roles: Vec::new(),
        })
        .await
        .expect("sign");
    assert_eq!(
        jsonwebtoken::decode_header(&signed_by_new)
            .expect("header")
            .kid,
        Some(new_kid.clone())
    );
    assert_eq!(
        server
            .with_credentials(&signed_by_new)
            .get("/users/me")
            .await
            .status(),
        StatusCode::OK
    );
    // The old token still works, and the JWKS publishes both keys.
    assert_eq!(
        server
            .with_credentials(&old_token)
            .get("/users/me")
            .await
            .status(),
        StatusCode::OK
    );
    let jwks: Value = server
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .expect("json");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|key| key["kid"].as_str())
        .collect();
    assert!(kids.contains(&new_kid.as_str()), "{jwks}");
    assert!(
        old_kid.as_deref().is_some_and(|old| kids.contains(&old)),
        "{jwks}"
    );
    server.stop().await;
}

/// An OpenID Connect issuer of the test's own: a discovery document and a JWKS with one
/// Ed25519 key, on a free port.
struct Issuer {
    url: String,
    key: EncodingKey,
}

impl Issuer {
    async fn start() -> Issuer {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let public = signing.verifying_key().to_bytes();
        let der = signing.to_pkcs8_der().expect("der");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let x = base64_url(&public);
        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
        let jwks = json!({ "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "issuer-1",
            "alg": "EdDSA", "use": "sig" }] });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let discovery = discovery.clone();
                    async move { Json(discovery) }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    let jwks = jwks.clone();
                    async move { Json(jwks) }
                }),
            );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Issuer {
            url,
            key: EncodingKey::from_ed_der(der.as_bytes()),
        }
    }

    fn token(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("issuer-1".to_owned());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }

    fn claims(&self, subject: &str, audience: &str, expires_in: i64) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({ "iss": self.url, "aud": audience, "sub": subject, "iat": now, "exp": now + expires_in })
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_the_configured_oidc_issuer_are_accepted_with_its_algorithms_pinned() {
    let Some(data) = TestData::new(Setup::Embedded, "oidc").await else {
        return;
    };
    let issuer = Issuer::start().await;
    let server = TestApp::start_with(
        &data,
        "all",
        &[
            "--oidc-issuer-url",
            &issuer.url,
            "--oidc-audience",
            "shop-api",
        ],
    )
    .await;
    let (product_id, _) = server
        .create_product("Lamp", "Bright", 20.0, 5, "Home")
        .await;
    // A customer of the issuer orders, and reads their order back.
    let customer =
        server.with_credentials(&issuer.token(issuer.claims("ext-123", "shop-api", 300)));
    let ordered = customer
        .post(
            "/orders",
            json!({ "lines": [{ "product_id": product_id, "quantity": 1 }], "payment_token": "tok_visa" }),
        )
        .await;
    assert_eq!(ordered.status(), StatusCode::ACCEPTED);
    let position = event_position(&ordered);
    let order_id = ordered.json::<Value>().await.expect("json")["order_id"]
        .as_str()
        .expect("order_id")
        .to_owned();
    let read = customer
        .get_at(&format!("/orders/{order_id}"), position)
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    let other = server.with_credentials(&issuer.token(issuer.claims("ext-456", "shop-api", 300)));
    assert_eq!(
        other.get(&format!("/orders/{order_id}")).await.status(),
        StatusCode::NOT_FOUND,
        "another subject of the issuer is another customer"
    );
    // Staff of the issuer carry their roles.
    let mut staff_claims = issuer.claims("ext-staff", "shop-api", 300);
    staff_claims["mercato_roles"] = json!(["catalog"]);
    let staff = server.with_credentials(&issuer.token(staff_claims));
    let created = staff
        .post(
            "/products",
            json!({ "name": "Shade", "description": "Linen", "price": 9.5, "stock_qty": 2 }),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    // Refused: another audience, an expired token, and an HMAC token keyed with the issuer's
    // public key (the algorithm confusion that pinning prevents).
    let refused = [
        issuer.token(issuer.claims("ext-123", "another-api", 300)),
        issuer.token(issuer.claims("ext-123", "shop-api", -300)),
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &issuer.claims("ext-123", "shop-api", 300),
            &EncodingKey::from_secret(
                ed25519_dalek::SigningKey::from_bytes(&[42; 32])
                    .verifying_key()
                    .as_bytes(),
            ),
        )
        .expect("sign"),
    ];
    for token in refused {
        let response = server.with_credentials(&token).get("/search").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key("www-authenticate"));
    }
    server.stop().await;
}
