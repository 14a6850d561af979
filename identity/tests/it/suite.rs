//! The secret store's behaviour suite: each case is a function of a fresh [`SecretStore`], run
//! once on SQLite and once on PostgreSQL by [`secret_store_suite!`].

use std::collections::BTreeSet;
use std::time::Duration;

use domain::{AccountKind, Role};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use identity::api_keys::{ApiKeyError, ApiKeys};
use identity::credentials::{Added, Credentials};
use identity::person_keys::{Opened, PersonKeys};
use identity::sessions::{OneTimeError, OneTimeTokens, Purpose, RefreshError, Sessions};
use identity::signing::{
    ACCESS_TOKEN_TTL, AccessClaims, SigningKeys, TOKEN_AUDIENCE, TOKEN_ISSUER, TokenError,
};
use identity::throttle::{LoginThrottle, Subject};
use identity::{PaymentVault, Principal, Resource, ResourceTokens, SecretStore};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use uuid::Uuid;

/// A fresh store on SQLite, in a temporary directory.
async fn sqlite_store() -> (tempfile::TempDir, SecretStore) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}",
        directory.path().join("mercato-identity.db").display()
    );
    (directory, SecretStore::open(&url).await.expect("open"))
}

/// A fresh store on a PostgreSQL database of the test's own.
async fn postgres_store(
    test_name: &str,
) -> Option<(eventstore::testing::TestDatabase, SecretStore)> {
    let database = eventstore::testing::TestDatabase::create(test_name).await?;
    let store = SecretStore::open(database.url()).await.expect("open");
    Some((database, store))
}

macro_rules! secret_store_suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (_directory, store) = super::sqlite_store().await;
                    super::$case(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some((_database, store)) =
                        super::postgres_store(concat!("identity_", stringify!($case))).await
                    else {
                        return;
                    };
                    super::$case(store).await;
                }
            )*
        }
    };
}

secret_store_suite!(
    a_setting_made_twice_keeps_the_first_value,
    a_token_verifies_until_it_expires,
    after_a_rotation_the_new_key_signs_and_the_old_one_still_verifies,
    a_token_of_another_key_or_algorithm_is_refused,
    a_configured_key_signs_and_a_malformed_one_is_refused_naming_the_variable,
    a_refresh_token_rotates_once_and_its_reuse_ends_the_session,
    a_password_change_or_a_deactivation_ends_every_session_of_the_user,
    a_one_time_token_works_once_for_its_purpose_until_it_expires,
    an_api_key_authenticates_with_its_roles_until_it_is_revoked,
    an_account_waits_after_five_failures_until_a_success_an_address_after_twenty,
    after_the_key_is_destroyed_every_value_of_the_person_opens_as_erased,
    a_cart_token_opens_its_own_cart_only_and_survives_a_restart,
    one_email_is_one_account_and_an_abandoned_registration_is_taken_over,
    the_vault_keeps_the_first_token_of_an_order_until_it_is_forgotten,
);

async fn a_setting_made_twice_keeps_the_first_value(store: SecretStore) {
    let first = store
        .setting_or_insert("cart_token_key", || "first".to_owned())
        .await
        .expect("setting");
    let second = store
        .setting_or_insert("cart_token_key", || "second".to_owned())
        .await
        .expect("setting");
    assert_eq!((first.as_str(), second.as_str()), ("first", "first"));
}

fn claims(exp_from_now: i64) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        iss: TOKEN_ISSUER.to_owned(),
        aud: TOKEN_AUDIENCE.to_owned(),
        sub: "user-1".to_owned(),
        iat: now,
        exp: now + exp_from_now,
        jti: "j1".to_owned(),
        sid: "s1".to_owned(),
        kind: "customer".to_owned(),
        roles: Vec::new(),
    }
}

async fn a_token_verifies_until_it_expires(store: SecretStore) {
    let keys = SigningKeys::open(store, None).await.expect("keys");
    let token = keys.sign(&claims(60)).await.expect("sign");
    assert_eq!(keys.verify(&token).await, Ok(claims(60)));
    let expired = keys.sign(&claims(-120)).await.expect("sign");
    assert_eq!(keys.verify(&expired).await, Err(TokenError::Expired));
    let mut tampered = token.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(matches!(
        keys.verify(&tampered).await,
        Err(TokenError::Invalid(_))
    ));
    assert!(ACCESS_TOKEN_TTL <= Duration::from_secs(15 * 60));
}

async fn after_a_rotation_the_new_key_signs_and_the_old_one_still_verifies(store: SecretStore) {
    let keys = SigningKeys::open(store.clone(), None).await.expect("keys");
    let before = keys.sign(&claims(60)).await.expect("sign");
    let old_kid = jsonwebtoken::decode_header(&before).expect("header").kid;
    let new_kid = keys.rotate().await.expect("rotate");
    let after = keys.sign(&claims(60)).await.expect("sign");
    assert_eq!(
        jsonwebtoken::decode_header(&after).expect("header").kid,
        Some(new_kid.clone())
    );
    assert_ne!(old_kid, Some(new_kid));
    assert!(keys.verify(&before).await.is_ok());
    // A second process on the same store learns of the new key from the token itself.
    let other = SigningKeys::open(store, None).await.expect("keys");
    assert!(other.verify(&after).await.is_ok());
    let jwks = keys.jwks().await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    let listed = keys.list().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed[1].2.is_some(), "the old key is retired: {listed:?}");
}

async fn a_token_of_another_key_or_algorithm_is_refused(store: SecretStore) {
    let (_directory, stranger_store) = sqlite_store().await;
    let keys = SigningKeys::open(store, None).await.expect("keys");
    let stranger = SigningKeys::open(stranger_store, None).await.expect("keys");
    let token = stranger.sign(&claims(60)).await.expect("sign");
    assert!(matches!(
        keys.verify(&token).await,
        Err(TokenError::Invalid(_))
    ));
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(60),
        &EncodingKey::from_secret(b"secret"),
    )
    .expect("encode");
    let refused = keys.verify(&hs256).await.unwrap_err();
    assert!(refused.to_string().contains("EdDSA"), "{refused}");
    use base64::Engine;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let none = format!(
        "{}.{}.",
        encode(br#"{"alg":"none","typ":"JWT"}"#),
        encode(serde_json::to_string(&claims(60)).expect("json").as_bytes())
    );
    assert!(matches!(
        keys.verify(&none).await,
        Err(TokenError::Invalid(_))
    ));
}

async fn a_configured_key_signs_and_a_malformed_one_is_refused_naming_the_variable(
    store: SecretStore,
) {
    let pem = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("pem");
    let keys = SigningKeys::open(store.clone(), Some(&pem))
        .await
        .expect("keys");
    let token = keys.sign(&claims(60)).await.expect("sign");
    let kid = jsonwebtoken::decode_header(&token)
        .expect("header")
        .kid
        .expect("kid");
    assert!(keys.public_key(&kid).is_some());
    assert!(keys.verify(&token).await.is_ok());
    let error = SigningKeys::open(store, Some("not a key"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("MERCATO_SIGNING_KEY"), "{error}");
}

async fn a_refresh_token_rotates_once_and_its_reuse_ends_the_session(store: SecretStore) {
    let sessions = Sessions::new(store);
    let user = Uuid::from_u128(1);
    let first = sessions.start(user).await.expect("start");
    let second = sessions
        .rotate(&first.token)
        .await
        .expect("rotate")
        .expect("valid");
    assert_eq!(
        (second.user_id, second.family_id.as_str()),
        (user, first.family_id.as_str())
    );
    let third = sessions
        .rotate(&second.token)
        .await
        .expect("rotate")
        .expect("valid");
    // The first token again: reuse, and the family (third included) is revoked.
    assert_eq!(
        sessions.rotate(&first.token).await.expect("rotate"),
        Err(RefreshError::Reused)
    );
    assert_eq!(
        sessions.rotate(&third.token).await.expect("rotate"),
        Err(RefreshError::Revoked)
    );
    assert_eq!(
        sessions.rotate("rt_unknown").await.expect("rotate"),
        Err(RefreshError::Unknown)
    );
    // Two requests with one token at once: one wins, the other ends the session.
    let fourth = sessions.start(user).await.expect("start");
    let (one, two) = tokio::join!(
        sessions.rotate(&fourth.token),
        sessions.rotate(&fourth.token)
    );
    let outcomes = [one.expect("rotate"), two.expect("rotate")];
    assert_eq!(
        outcomes.iter().filter(|outcome| outcome.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
}

async fn a_password_change_or_a_deactivation_ends_every_session_of_the_user(store: SecretStore) {
    let sessions = Sessions::new(store);
    let (ann, bob) = (Uuid::from_u128(2), Uuid::from_u128(3));
    let phone = sessions.start(ann).await.expect("start");
    let laptop = sessions.start(ann).await.expect("start");
    let others = sessions.start(bob).await.expect("start");
    sessions.revoke_user(ann).await.expect("revoke");
    for session in [&phone, &laptop] {
        assert_eq!(
            sessions.rotate(&session.token).await.expect("rotate"),
            Err(RefreshError::Revoked)
        );
    }
    assert!(
        sessions
            .rotate(&others.token)
            .await
            .expect("rotate")
            .is_ok()
    );
}

async fn a_one_time_token_works_once_for_its_purpose_until_it_expires(store: SecretStore) {
    let tokens = OneTimeTokens::new(store);
    let user = Uuid::from_u128(4);
    let reset = tokens
        .issue(Purpose::ResetPassword, user)
        .await
        .expect("issue");
    assert_eq!(
        tokens
            .consume(Purpose::VerifyEmail, &reset)
            .await
            .expect("consume"),
        Err(OneTimeError::Unknown),
        "a reset token is not a verification token"
    );
    assert_eq!(
        tokens
            .consume(Purpose::ResetPassword, &reset)
            .await
            .expect("consume"),
        Ok(user)
    );
    assert_eq!(
        tokens
            .consume(Purpose::ResetPassword, &reset)
            .await
            .expect("consume"),
        Err(OneTimeError::Used)
    );
    let expiring = tokens
        .issue(Purpose::ResetPassword, user)
        .await
        .expect("issue");
    tokens.expire(&expiring).await.expect("expire");
    assert_eq!(
        tokens
            .consume(Purpose::ResetPassword, &expiring)
            .await
            .expect("consume"),
        Err(OneTimeError::Expired)
    );
    let older = tokens
        .issue(Purpose::ResetPassword, user)
        .await
        .expect("issue");
    let newer = tokens
        .issue(Purpose::ResetPassword, user)
        .await
        .expect("issue");
    assert_eq!(
        tokens
            .consume(Purpose::ResetPassword, &older)
            .await
            .expect("consume"),
        Err(OneTimeError::Used),
        "a newer reset token replaces the older one"
    );
    assert_eq!(
        tokens
            .consume(Purpose::ResetPassword, &newer)
            .await
            .expect("consume"),
        Ok(user)
    );
}

async fn an_api_key_authenticates_with_its_roles_until_it_is_revoked(store: SecretStore) {
    let keys = ApiKeys::new(store);
    let roles: BTreeSet<Role> = [Role::Catalog].into_iter().collect();
    let (key_id, key) = keys.create("importer", &roles).await.expect("create");
    assert!(key.starts_with(&format!("mk_{key_id}_")));
    assert_eq!(
        keys.authenticate(&key).await.expect("read"),
        Ok(Principal::Service {
            key_id: key_id.clone(),
            roles: roles.clone()
        })
    );
    let wrong_secret = format!("mk_{key_id}_{}", "A".repeat(43));
    assert_eq!(
        keys.authenticate(&wrong_secret).await.expect("read"),
        Err(ApiKeyError::Unknown)
    );
    assert_eq!(
        keys.authenticate("mk_nothex").await.expect("read"),
        Err(ApiKeyError::Malformed)
    );
    assert!(!keys.any_admin().await.expect("read"));
    assert!(keys.revoke(&key_id).await.expect("revoke"));
    assert!(
        !keys.revoke(&key_id).await.expect("revoke"),
        "revoked already"
    );
    assert_eq!(
        keys.authenticate(&key).await.expect("read"),
        Err(ApiKeyError::Revoked)
    );
    let listed = keys.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    assert_eq!(listed[0].name, "importer");
    let admins: BTreeSet<Role> = [Role::Admin].into_iter().collect();
    keys.create("operator", &admins).await.expect("create");
    assert!(keys.any_admin().await.expect("read"));
}

async fn an_account_waits_after_five_failures_until_a_success_an_address_after_twenty(
    store: SecretStore,
) {
    let throttle = LoginThrottle::new(store);
    let account = Subject::account("ann@example.com");
    let address = Subject::address("192.0.2.7".parse().expect("address"));
    let both = [account.clone(), address.clone()];
    for _ in 0..4 {
        throttle.record_failure(&both).await.expect("record");
    }
    assert_eq!(throttle.wait(&both).await.expect("wait"), None);
    throttle.record_failure(&both).await.expect("record");
    let wait = throttle
        .wait(&both)
        .await
        .expect("wait")
        .expect("throttled");
    assert!(
        wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    assert_eq!(
        throttle
            .wait(std::slice::from_ref(&address))
            .await
            .expect("wait"),
        None
    );
    throttle.clear(&account).await.expect("clear");
    assert_eq!(throttle.wait(&both).await.expect("wait"), None);
    // One address guessing at many accounts, none of them failing five times: the address waits
    // after its twentieth failure (five are counted above), whichever account it tries next.
    for guess in 0..14 {
        let other = Subject::account(&format!("guess{guess}@example.com"));
        throttle
            .record_failure(&[other, address.clone()])
            .await
            .expect("record");
    }
    let fresh = [Subject::account("zoe@example.com"), address.clone()];
    assert_eq!(throttle.wait(&fresh).await.expect("wait"), None);
    throttle
        .record_failure(&[Subject::account("guess14@example.com"), address.clone()])
        .await
        .expect("record");
    let wait = throttle
        .wait(&fresh)
        .await
        .expect("wait")
        .expect("the address is throttled");
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    let elsewhere = [
        Subject::account("zoe@example.com"),
        Subject::address("198.51.100.9".parse().expect("address")),
    ];
    assert_eq!(throttle.wait(&elsewhere).await.expect("wait"), None);
}

async fn after_the_key_is_destroyed_every_value_of_the_person_opens_as_erased(store: SecretStore) {
    let keys = PersonKeys::new(store);
    let email = keys
        .seal("ann", "email", "ann@example.com")
        .await
        .expect("seal");
    let other = keys
        .seal("bob", "email", "bob@example.com")
        .await
        .expect("seal");
    assert_eq!(
        keys.open("ann", "email", &email).await.expect("open"),
        Opened::Plain("ann@example.com".to_owned())
    );
    keys.destroy("ann").await.expect("destroy");
    assert_eq!(
        keys.open("ann", "email", &email).await.expect("open"),
        Opened::Erased
    );
    assert!(!keys.exists("ann").await.expect("exists"));
    assert_eq!(
        keys.open("bob", "email", &other).await.expect("open"),
        Opened::Plain("bob@example.com".to_owned())
    );
}

async fn a_cart_token_opens_its_own_cart_only_and_survives_a_restart(store: SecretStore) {
    let tokens = ResourceTokens::open(&store).await.expect("tokens");
    let cart = tokens.token(Resource::Cart, "cart-1");
    assert!(cart.starts_with("ct_"));
    assert!(tokens.verify(Resource::Cart, "cart-1", &cart));
    assert!(!tokens.verify(Resource::Cart, "cart-2", &cart));
    assert!(!tokens.verify(Resource::Order, "cart-1", &cart));
    assert!(!tokens.verify(Resource::Cart, "cart-1", "ct_AAAA"));
    let reopened = ResourceTokens::open(&store).await.expect("tokens");
    assert!(reopened.verify(Resource::Cart, "cart-1", &cart));
}

async fn one_email_is_one_account_and_an_abandoned_registration_is_taken_over(store: SecretStore) {
    let credentials = Credentials::open(store).await.expect("credentials");
    let lookup = credentials.email_lookup("Ann.Lee@example.com");
    assert_eq!(lookup, credentials.email_lookup("ann.lee@EXAMPLE.com"));
    assert!(
        !lookup.contains("ann"),
        "the address is not kept in the clear"
    );
    let none = BTreeSet::new();
    let (ann, other, third) = (Uuid::from_u128(5), Uuid::from_u128(6), Uuid::from_u128(7));
    let added = credentials
        .add(
            ann,
            &lookup,
            "hash-1",
            AccountKind::Customer,
            &none,
            |_| async { Ok(true) },
        )
        .await
        .expect("add");
    assert_eq!(added, Added::Added);
    let taken = credentials
        .add(
            other,
            &lookup,
            "hash-2",
            AccountKind::Customer,
            &none,
            |_| async { Ok(true) },
        )
        .await
        .expect("add");
    assert_eq!(taken, Added::EmailTaken { user_id: ann });
    // The holder's registration never stored its event: the row is taken over.
    let taken_over = credentials
        .add(
            third,
            &lookup,
            "hash-3",
            AccountKind::Customer,
            &none,
            |_| async { Ok(false) },
        )
        .await
        .expect("add");
    assert_eq!(taken_over, Added::Added);
    let credential = credentials
        .by_email(&lookup)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        (credential.user_id, credential.password_hash.as_str()),
        (third, "hash-3")
    );
    assert!(!credentials.any_admin().await.expect("read"));
    let admin = Uuid::from_u128(8);
    let admins: BTreeSet<Role> = [Role::Admin].into_iter().collect();
    credentials
        .add(
            admin,
            &credentials.email_lookup("ops@example.com"),
            "hash-4",
            AccountKind::Staff,
            &admins,
            |_| async { Ok(true) },
        )
        .await
        .expect("add");
    assert!(credentials.any_admin().await.expect("read"));
    credentials.delete(third).await.expect("delete");
    assert!(credentials.by_email(&lookup).await.expect("read").is_none());
}

async fn the_vault_keeps_the_first_token_of_an_order_until_it_is_forgotten(store: SecretStore) {
    let vault = PaymentVault::new(store);
    let order = Uuid::from_u128(9);
    let reference = vault.keep(order, "tok_visa").await.expect("keep");
    assert_eq!(reference, PaymentVault::reference(order));
    assert!(!reference.contains("tok_visa"));
    vault.keep(order, "tok_other").await.expect("keep again");
    assert_eq!(
        vault.token(&reference).await.expect("read").as_deref(),
        Some("tok_visa")
    );
    vault.forget(&reference).await.expect("forget");
    assert_eq!(vault.token(&reference).await.expect("read"), None);
}
