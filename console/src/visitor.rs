//! Who is looking at a page, from the console's cookies: the visitor's session (the tokens the
//! API gave at login), their cart, the orders a guest placed, and the form token against
//! cross-site requests. Every cookie is `HttpOnly` and `SameSite`; the tokens in them are the
//! API's own, which checks them on every call as it checks any client's.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use serde_json::Value;
use uuid::Uuid;

use crate::api::{Answer, Api, Call, Origin};

pub const SESSION_COOKIE: &str = "mercato_session";
pub const CART_COOKIE: &str = "mercato_cart";
pub const ORDERS_COOKIE: &str = "mercato_orders";
pub const FORM_COOKIE: &str = "mercato_form";

/// How long the session cookie lives: the refresh token's lifetime bounds it anyway.
const SESSION_MAX_AGE: u64 = 30 * 24 * 3600;
/// How many guest orders the console remembers.
const GUEST_ORDERS_KEPT: usize = 10;

/// The claims of an access token (a JWT), unverified: the API verifies it on every call.
fn access_claims(token: &str) -> Option<Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The cookies of one request, and the ones its answer sets.
#[derive(Clone, Debug, Default)]
pub struct Visitor {
    pub session: Option<Session>,
    pub cart: Option<CartCookie>,
    /// Orders a guest placed here, with their order tokens.
    pub guest_orders: Vec<(String, String)>,
    /// The form token (`csrf` in every form that writes).
    pub form_token: String,
    /// Whether the form token is new (its cookie must be set).
    pub new_form_token: bool,
    /// The account, when the session holds: `user_id`, `kind` and `roles`.
    pub me: Option<Value>,
    pub origin: Origin,
    /// Cookies to set on the answer.
    pub set: Vec<String>,
}

/// The tokens of a logged-in visitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub access: String,
    pub refresh: String,
}

/// The visitor's cart: its id, and for a guest its cart token. `owner` is the account it was
/// made for (empty for a guest), so that another login starts a cart of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CartCookie {
    pub cart_id: String,
    pub token: String,
    pub owner: String,
}

impl CartCookie {
    /// `call`, made for this cart: with its token when a guest holds it.
    pub fn authorize(&self, call: Call) -> Call {
        if self.token.is_empty() {
            call
        } else {
            call.header("x-cart-token", self.token.clone())
        }
    }
}

/// The value of cookie `name` in `headers`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Cookie values hold only these (tokens, ids, and the separators `.`, `_`, `-`, `~`, `:`, `,`).
fn safe(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 3000
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-~:,".contains(&b))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax` (so that a link from a mail still opens
/// the visitor's own pages), on the whole console.
pub fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}")
}

/// A `Set-Cookie` that removes cookie `name`.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
}

impl Visitor {
    /// The visitor of a request with `headers`, coming from `origin`.
    pub fn from_headers(headers: &HeaderMap, origin: Origin) -> Visitor {
        let session = cookie(headers, SESSION_COOKIE)
            .filter(|value| safe(value))
            .and_then(|value| value.split_once(','))
            .map(|(access, refresh)| Session {
                access: access.to_owned(),
                refresh: refresh.to_owned(),
            });
        let cart = cookie(headers, CART_COOKIE)
            .filter(|value| safe(value))
            .and_then(|value| {
                let mut parts = value.splitn(3, ',');
                Some(CartCookie {
                    cart_id: parts.next()?.to_owned(),
                    token: parts.next()?.to_owned(),
                    owner: parts.next().unwrap_or_default().to_owned(),
                })
            });
        let guest_orders = cookie(headers, ORDERS_COOKIE)
            .filter(|value| safe(value))
            .map(|value| {
                value
                    .split(',')
                    .filter_map(|pair| pair.split_once(':'))
                    .map(|(order, token)| (order.to_owned(), token.to_owned()))
                    .take(GUEST_ORDERS_KEPT)
                    .collect()
            })
            .unwrap_or_default();
        let existing = cookie(headers, FORM_COOKIE)
            .filter(|value| value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()));
        let (form_token, new_form_token) = match existing {
            Some(token) => (token.to_owned(), false),
            None => (Uuid::new_v4().simple().to_string(), true),
        };
        Visitor {
            session,
            cart,
            guest_orders,
            form_token,
            new_form_token,
            me: None,
            origin,
            set: Vec::new(),
        }
    }

    /// The access token, when logged in.
    pub fn bearer(&self) -> Option<&str> {
        self.session.as_ref().map(|session| session.access.as_str())
    }

    /// The account's id, when logged in.
    pub fn user_id(&self) -> Option<&str> {
        self.me.as_ref().and_then(|me| me["user_id"].as_str())
    }

    /// Who the visitor is to the permission table: their account's kind and roles, as their
    /// access token says (the API checks the token itself on every call).
    pub fn principal(&self) -> identity::Principal {
        use identity::Principal;
        let Some(me) = &self.me else {
            return Principal::Anonymous;
        };
        let Some(user_id) = me["user_id"]
            .as_str()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
        else {
            return Principal::Anonymous;
        };
        if me["kind"] == "staff" {
            let roles = self
                .roles()
                .iter()
                .filter_map(|role| domain::Role::parse(role))
                .collect();
            Principal::Staff { user_id, roles }
        } else {
            Principal::Customer { user_id }
        }
    }

    /// The account's staff roles.
    pub fn roles(&self) -> Vec<String> {
        self.me
            .as_ref()
            .and_then(|me| me["roles"].as_array())
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(|role| role.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes `call` as this visitor. An access token that expired is refreshed once (the new
    /// pair goes into the session cookie); a session that no longer holds is forgotten.
    pub async fn call(&mut self, api: &Api, call: Call) -> Answer {
        let answer = api
            .call(call.clone().bearer(self.bearer()), &self.origin)
            .await;
        if answer.status != http::StatusCode::UNAUTHORIZED || self.session.is_none() {
            return answer;
        }
        if self.refresh(api).await {
            return api.call(call.bearer(self.bearer()), &self.origin).await;
        }
        answer
    }

    /// Who the session is for, from its access token's claims (`sub`, `kind`, `roles`): what
    /// the menus show. The API checks the token's signature on every call, so a forged cookie
    /// shows its maker menus whose pages the API then refuses. An access token about to expire
    /// is refreshed first; a session that no longer holds is dropped.
    pub async fn identify(&mut self, api: &Api) {
        let Some(session) = &self.session else {
            return;
        };
        let mut claims = access_claims(&session.access);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        let expiring = claims
            .as_ref()
            .is_none_or(|claims| claims["exp"].as_i64().unwrap_or(0) < now + 10);
        if expiring {
            if !self.refresh(api).await {
                return;
            }
            claims = self
                .session
                .as_ref()
                .and_then(|session| access_claims(&session.access));
        }
        self.me = claims.map(|claims| {
            serde_json::json!({
                "user_id": claims["sub"],
                "kind": claims["kind"],
                "roles": claims["roles"],
            })
        });
    }

    async fn refresh(&mut self, api: &Api) -> bool {
        let Some(session) = self.session.clone() else {
            return false;
        };
        let answer = api
            .call(
                Call::post(
                    "/sessions/refresh",
                    serde_json::json!({ "refresh_token": session.refresh }),
                ),
                &self.origin,
            )
            .await;
        if answer.ok() && self.log_in(&answer.body) {
            return true;
        }
        if answer.status.is_client_error() {
            self.log_out();
        }
        false
    }

    /// Keeps the session an answer of `POST /sessions` (or a refresh) gave.
    pub fn log_in(&mut self, session: &Value) -> bool {
        let (Some(access), Some(refresh)) = (
            session["access_token"].as_str(),
            session["refresh_token"].as_str(),
        ) else {
            return false;
        };
        if !safe(access) || !safe(refresh) {
            return false;
        }
        self.session = Some(Session {
            access: access.to_owned(),
            refresh: refresh.to_owned(),
        });
        self.set.push(set_cookie(
            SESSION_COOKIE,
            &format!("{access},{refresh}"),
            SESSION_MAX_AGE,
        ));
        true
    }

    /// Forgets the session (and the account's cart).
    pub fn log_out(&mut self) {
        self.session = None;
        self.me = None;
        self.set.push(clear_cookie(SESSION_COOKIE));
        if self
            .cart
            .as_ref()
            .is_some_and(|cart| !cart.owner.is_empty())
        {
            self.cart = None;
            self.set.push(clear_cookie(CART_COOKIE));
        }
    }

    /// The visitor's cart, when it is theirs: a guest's cart while no one is logged in, an
    /// account's while that account is.
    pub fn own_cart(&self) -> Option<&CartCookie> {
        let owner = self.user_id().unwrap_or_default();
        self.cart.as_ref().filter(|cart| cart.owner == owner)
    }

    /// Keeps `cart` as the visitor's cart.
    pub fn keep_cart(&mut self, cart: CartCookie) {
        self.set.push(set_cookie(
            CART_COOKIE,
            &format!("{},{},{}", cart.cart_id, cart.token, cart.owner),
            SESSION_MAX_AGE,
        ));
        self.cart = Some(cart);
    }

    /// Forgets the cart (it was checked out).
    pub fn drop_cart(&mut self) {
        self.cart = None;
        self.set.push(clear_cookie(CART_COOKIE));
    }

    /// Remembers an order a guest placed, with its order token.
    pub fn keep_guest_order(&mut self, order_id: &str, token: &str) {
        if !safe(order_id) || !safe(token) {
            return;
        }
        self.guest_orders.retain(|(order, _)| order != order_id);
        self.guest_orders
            .insert(0, (order_id.to_owned(), token.to_owned()));
        self.guest_orders.truncate(GUEST_ORDERS_KEPT);
        let value = self
            .guest_orders
            .iter()
            .map(|(order, token)| format!("{order}:{token}"))
            .collect::<Vec<_>>()
            .join(",");
        self.set
            .push(set_cookie(ORDERS_COOKIE, &value, SESSION_MAX_AGE));
    }

    /// The order token of a guest's order placed here.
    pub fn guest_order_token(&self, order_id: &str) -> Option<&str> {
        self.guest_orders
            .iter()
            .find(|(order, _)| order == order_id)
            .map(|(_, token)| token.as_str())
    }

    /// Whether `given` (a form's `csrf` field) is this visitor's form token.
    pub fn form_token_matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        !self.new_form_token && bool::from(given.as_bytes().ct_eq(self.form_token.as_bytes()))
    }

    /// The cookies to set: the ones the request changed, and the form token when it is new.
    pub fn cookies(&self) -> Vec<String> {
        let mut cookies = self.set.clone();
        if self.new_form_token {
            cookies.push(format!(
                "{FORM_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE}",
                self.form_token
            ));
        }
        cookies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie_header: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, cookie_header.parse().expect("header"));
        headers
    }

    #[test]
    fn cookies_are_read_and_anything_odd_in_them_is_ignored() {
        let visitor = Visitor::from_headers(
            &headers(
                "mercato_session=aaa.bbb.ccc,rrr; mercato_cart=c-1,tok,; \
                 mercato_orders=o1:t1,o2:t2; mercato_form=0123456789abcdef0123456789abcdef",
            ),
            Origin::default(),
        );
        assert_eq!(visitor.bearer(), Some("aaa.bbb.ccc"));
        assert_eq!(
            visitor.own_cart().map(|cart| cart.cart_id.as_str()),
            Some("c-1")
        );
        assert_eq!(visitor.guest_order_token("o2"), Some("t2"));
        assert!(visitor.form_token_matches("0123456789abcdef0123456789abcdef"));
        assert!(!visitor.form_token_matches("0123456789abcdef0123456789abcdee"));

        let odd = Visitor::from_headers(
            &headers("mercato_session=<script>,x; mercato_form=short; mercato_cart=a b,c"),
            Origin::default(),
        );
        assert_eq!(odd.session, None);
        assert_eq!(odd.cart, None);
        assert!(odd.new_form_token);
        // A new form token is never accepted: the form it was sent with did not come from here.
        assert!(!odd.form_token_matches(&odd.form_token.clone()));
    }
}
