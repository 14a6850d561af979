//! Who a request comes from, as its credentials proved it.

use std::collections::BTreeSet;
use std::fmt;

use domain::{CustomerId, Role};
use uuid::Uuid;

/// The principal of a request: what its `Authorization` header proved (nothing, an access token
/// or an API key). A guest is not a principal of its own: an anonymous request acts as the
/// guest of a cart or an order by presenting that resource's token ([`crate::ResourceTokens`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A customer's account (or a customer of the configured OIDC issuer).
    Customer { user_id: Uuid },
    /// A staff account (catalog, support, admin or auditor, alone or together).
    Staff {
        user_id: Uuid,
        roles: BTreeSet<Role>,
    },
    /// An API key, with the roles it was created with.
    Service {
        key_id: String,
        roles: BTreeSet<Role>,
    },
}

impl Principal {
    /// The `actor` of the events this principal's requests cause: `anonymous`, `user:<id>`,
    /// `staff:<id>` or `service:<key id>` (a guest's is `guest:<cart id>`, set where the cart
    /// token is checked).
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::Customer { user_id } => format!("user:{user_id}"),
            Principal::Staff { user_id, .. } => format!("staff:{user_id}"),
            Principal::Service { key_id, .. } => format!("service:{key_id}"),
        }
    }

    /// Whether this principal holds `role`. An admin holds every staff role and the auditor's.
    pub fn has_role(&self, role: Role) -> bool {
        match self {
            Principal::Staff { roles, .. } | Principal::Service { roles, .. } => {
                roles.contains(&role) || roles.contains(&Role::Admin)
            }
            Principal::Anonymous | Principal::Customer { .. } => false,
        }
    }

    /// The account behind the principal (a customer's or a staff member's), if any.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::Customer { user_id } | Principal::Staff { user_id, .. } => Some(*user_id),
            Principal::Anonymous | Principal::Service { .. } => None,
        }
    }

    /// The customer id of a customer (their user id), the id their carts and orders carry.
    pub fn customer_id(&self) -> Option<CustomerId> {
        match self {
            Principal::Customer { user_id } => CustomerId::parse(&user_id.to_string()).ok(),
            _ => None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        *self == Principal::Anonymous
    }

    /// A short name of the kind of principal, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::Customer { .. } => "customer",
            Principal::Staff { .. } => "staff",
            Principal::Service { .. } => "service",
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.actor())
    }
}

/// The customer id of a guest's order: guests have no account, so their orders are found by
/// the order token checkout gave them, never by a customer id.
pub const GUEST_CUSTOMER_ID: &str = "guest";

/// The actor of a guest acting through the token of cart `cart_id`.
pub fn guest_actor(cart_id: &str) -> String {
    format!("guest:{cart_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_holds_every_role_and_a_customer_none() {
        let admin = Principal::Staff {
            user_id: Uuid::nil(),
            roles: [Role::Admin].into_iter().collect(),
        };
        let catalog = Principal::Service {
            key_id: "k1".to_owned(),
            roles: [Role::Catalog].into_iter().collect(),
        };
        for role in Role::ALL {
            assert!(admin.has_role(role), "{role:?}");
        }
        assert!(catalog.has_role(Role::Catalog));
        assert!(!catalog.has_role(Role::Support));
        assert!(!catalog.has_role(Role::Auditor));
        let customer = Principal::Customer {
            user_id: Uuid::nil(),
        };
        assert!(Role::ALL.iter().all(|role| !customer.has_role(*role)));
        assert_eq!(
            customer.customer_id().map(|id| id.to_string()),
            Some(Uuid::nil().to_string())
        );
    }

    #[test]
    fn each_principal_names_itself_as_the_actor_of_its_events() {
        let id = Uuid::from_u128(7);
        assert_eq!(Principal::Anonymous.actor(), "anonymous");
        assert_eq!(
            Principal::Customer { user_id: id }.actor(),
            format!("user:{id}")
        );
        assert_eq!(
            Principal::Staff {
                user_id: id,
                roles: BTreeSet::new()
            }
            .actor(),
            format!("staff:{id}")
        );
        assert_eq!(
            Principal::Service {
                key_id: "7f3a".to_owned(),
                roles: BTreeSet::new()
            }
            .actor(),
            "service:7f3a"
        );
        assert_eq!(guest_actor("cart-1"), "guest:cart-1");
    }
}
