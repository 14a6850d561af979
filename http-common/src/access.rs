//! Who may call a route ([`Access`], the rule each entry of the server's permission table
//! gives), the middleware that turns a request's `Authorization` header into its principal
//! ([`authenticate`]), and the answers for a caller without the right credentials (401 with
//! `WWW-Authenticate: Bearer`, 403).
//!
//! A rule says which kinds of caller get past the router. What a caller may then see of a
//! particular cart, order or profile (its own only) is the handler's business, and another
//! principal's resource answers 404 there, so ids cannot be probed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use domain::Role;
use identity::{AuthError, Authenticator, Principal};

use crate::context::RequestContext;
use crate::problem::Problem;

/// The token a guest holds for a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestToken {
    /// `X-Cart-Token`, from the answer to the cart's first write.
    Cart,
    /// `X-Order-Token`, from the checkout's answer.
    Order,
}

impl GuestToken {
    /// The request header that carries it.
    pub fn header(self) -> &'static str {
        match self {
            GuestToken::Cart => "X-Cart-Token",
            GuestToken::Order => "X-Order-Token",
        }
    }

    /// Its security scheme's name in the OpenAPI document.
    pub fn scheme(self) -> &'static str {
        match self {
            GuestToken::Cart => "cartToken",
            GuestToken::Order => "orderToken",
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Anyone, with or without credentials.
    pub anyone: bool,
    /// An anonymous caller acting as a guest, with the token of this kind (or, on a cart's first
    /// write, about to get one), which the handler checks.
    pub guests: Option<GuestToken>,
    /// A customer (for their own resources, which the handler checks).
    pub customers: bool,
    /// Any account, customer or staff (its own profile and sessions).
    pub accounts: bool,
    /// Staff accounts and API keys holding one of these roles (an admin holds every role).
    pub roles: &'static [Role],
}

impl Access {
    /// Anyone.
    pub const ANYONE: Access = Access {
        anyone: true,
        guests: None,
        customers: false,
        accounts: false,
        roles: &[],
    };

    /// No one but the roles added with [`Access::roles`].
    pub const NOBODY: Access = Access {
        anyone: false,
        guests: None,
        customers: false,
        accounts: false,
        roles: &[],
    };

    /// Staff and services with one of `roles`.
    pub const fn roles(roles: &'static [Role]) -> Access {
        Access {
            roles,
            ..Access::NOBODY
        }
    }

    /// The same, for guests holding `token` too.
    pub const fn and_guests(self, token: GuestToken) -> Access {
        Access {
            guests: Some(token),
            ..self
        }
    }

    /// The same, for customers too.
    pub const fn and_customers(self) -> Access {
        Access {
            customers: true,
            ..self
        }
    }

    /// The same, for every account (customer or staff).
    pub const fn and_accounts(self) -> Access {
        Access {
            accounts: true,
            ..self
        }
    }

    /// Whether this rule lets `principal` through, and if not, how to answer.
    pub fn decide(&self, principal: &Principal) -> Decision {
        if self.anyone {
            return Decision::Allow;
        }
        let allowed = match principal {
            Principal::Anonymous => self.guests.is_some(),
            Principal::Customer { .. } => self.customers || self.accounts,
            Principal::Staff { .. } => {
                self.accounts || self.roles.iter().any(|role| principal.has_role(*role))
            }
            Principal::Service { .. } => self.roles.iter().any(|role| principal.has_role(*role)),
        };
        match (allowed, principal) {
            (true, _) => Decision::Allow,
            (false, Principal::Anonymous) => Decision::Unauthenticated,
            (false, _) => Decision::Forbidden,
        }
    }

    /// Whether a request without credentials may call the route.
    pub fn admits_anonymous(&self) -> bool {
        self.anyone || self.guests.is_some()
    }

    /// Who the rule admits, in words (for the OpenAPI document and error details).
    pub fn describe(&self) -> String {
        if self.anyone {
            return "anyone".to_owned();
        }
        let mut who: Vec<String> = Vec::new();
        if let Some(token) = self.guests {
            who.push(format!("guests (with {})", token.header()));
        }
        if self.accounts {
            who.push("every account (its own)".to_owned());
        } else if self.customers {
            who.push("customers (their own)".to_owned());
        }
        if !self.roles.is_empty() {
            let roles: Vec<&str> = self.roles.iter().map(|role| role.as_str()).collect();
            who.push(format!(
                "staff and API keys with the role {}",
                roles.join(" or ")
            ));
        }
        if !self.roles.contains(&Role::Admin) && (!self.roles.is_empty() || !self.anyone) {
            who.push("admins".to_owned());
        }
        who.join(", ")
    }
}

/// What a rule decided for a principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No credentials where some are needed: 401.
    Unauthenticated,
    /// Credentials that do not admit the caller: 403.
    Forbidden,
}

/// 401 with `WWW-Authenticate: Bearer` (RFC 6750), saying what to send.
pub fn unauthenticated(detail: impl Into<String>, bearer_error: Option<&str>) -> Response {
    let mut response =
        Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail).into_response();
    let challenge = match bearer_error {
        Some(error) => format!("Bearer realm=\"mercato\", error=\"{error}\""),
        None => "Bearer realm=\"mercato\"".to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// 403 naming who may call the route.
pub fn forbidden(access: &Access) -> Response {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "your credentials do not allow this: it is for {}",
            access.describe()
        ),
    )
    .into_response()
}

/// The answer to a rule's decision, or `None` to go on.
pub fn refusal(access: &Access, principal: &Principal) -> Option<Response> {
    match access.decide(principal) {
        Decision::Allow => None,
        Decision::Unauthenticated => Some(unauthenticated(
            format!(
                "this route needs credentials (it is for {}): send `Authorization: Bearer <token>` with an access token from POST /sessions or an API key",
                access.describe()
            ),
            None,
        )),
        Decision::Forbidden => Some(forbidden(access)),
    }
}

/// Resolves the request's `Authorization` header to its principal and puts it in the request
/// context (with the actor of the events it causes). Credentials that do not hold (an expired
/// token, a token of another key, `alg: none`, a revoked API key) are a 401 on every route, so
/// a client learns at once that it must log in again.
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authenticated = match request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::to_str)
    {
        None => authenticator.authenticate(None).await,
        Some(Ok(value)) => authenticator.authenticate(Some(value)).await,
        Some(Err(_)) => {
            return unauthenticated(
                "the Authorization header must be `Bearer <token>` in ASCII",
                Some("invalid_request"),
            );
        }
    };
    let authenticated = match authenticated {
        Ok(authenticated) => authenticated,
        Err(AuthError::Unavailable(error)) => {
            return Problem::unavailable_logged("credentials cannot be checked right now", &error)
                .into_response();
        }
        Err(error) => {
            return unauthenticated(
                format!(
                    "{error}: log in again (POST /sessions or /sessions/refresh), or use a valid API key"
                ),
                Some(error.bearer_error()),
            );
        }
    };
    if authenticated.principal.is_anonymous() {
        // The request context starts anonymous: nothing to change.
        return next.run(request).await;
    }
    if let Some(context) = request.extensions_mut().get_mut::<RequestContext>() {
        context.actor = authenticated.principal.actor();
        context.principal = authenticated.principal;
        context.session_id = authenticated.session_id;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn staff(roles: &[Role]) -> Principal {
        Principal::Staff {
            user_id: Uuid::nil(),
            roles: roles.iter().copied().collect(),
        }
    }

    #[test]
    fn a_rule_admits_whom_it_names_and_answers_401_or_403_to_the_rest() {
        let catalog = Access::roles(&[Role::Catalog]);
        assert_eq!(
            catalog.decide(&Principal::Anonymous),
            Decision::Unauthenticated
        );
        assert_eq!(
            catalog.decide(&Principal::Customer {
                user_id: Uuid::nil()
            }),
            Decision::Forbidden
        );
        assert_eq!(
            catalog.decide(&staff(&[Role::Support])),
            Decision::Forbidden
        );
        assert_eq!(catalog.decide(&staff(&[Role::Catalog])), Decision::Allow);
        assert_eq!(catalog.decide(&staff(&[Role::Admin])), Decision::Allow);
        let carts = Access::NOBODY.and_guests(GuestToken::Cart).and_customers();
        assert_eq!(carts.decide(&Principal::Anonymous), Decision::Allow);
        assert_eq!(carts.decide(&staff(&[Role::Catalog])), Decision::Forbidden);
        let own = Access::NOBODY.and_accounts();
        assert_eq!(own.decide(&staff(&[Role::Auditor])), Decision::Allow);
        assert_eq!(
            own.decide(&Principal::Service {
                key_id: "k".to_owned(),
                roles: [Role::Admin].into_iter().collect()
            }),
            Decision::Forbidden,
            "a service has no profile of its own"
        );
        assert_eq!(
            Access::ANYONE.decide(&Principal::Anonymous),
            Decision::Allow
        );
        assert!(
            catalog.describe().contains("catalog"),
            "{}",
            catalog.describe()
        );
    }
}
