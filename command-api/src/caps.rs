//! The bounds on what one customer may hold reserved, so that one customer's orders cannot take
//! the stock and the saga from everyone else: how many orders may wait for payment at once, how
//! many units they may reserve together, and how many units one line may hold. Each is
//! configurable (0 turns the order caps off) and answered 422 naming the limit.
//!
//! Orders waiting for payment are counted from the orders read model ([`OpenOrders`]), so a
//! burst of orders within the read model's lag may pass the cap by what it has not applied yet.
//! Guests share one customer id: their orders are bounded by the rate limits at the edge.

use domain::order::OrderLine;
use http_common::Problem;

/// The bounds (see the module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderCaps {
    /// The most units one cart or order line may hold (at most the domain's own 999).
    pub max_line_quantity: u32,
    /// The most orders of one customer waiting for payment at once (0: no cap).
    pub max_open_orders: u32,
    /// The most units those orders and the new one may reserve together (0: no cap).
    pub max_reserved_units: u32,
}

impl Default for OrderCaps {
    fn default() -> Self {
        OrderCaps {
            max_line_quantity: domain::cart::LINE_QUANTITY_MAX,
            max_open_orders: 0,
            max_reserved_units: 0,
        }
    }
}

/// A customer's orders waiting for payment: how many, and how many units they reserve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Open {
    pub orders: u32,
    pub units: u64,
}

/// Where the command side reads a customer's orders waiting for payment (the orders read model).
#[async_trait::async_trait]
pub trait OpenOrders: Send + Sync + std::fmt::Debug {
    async fn open_orders(&self, customer_id: &str) -> Result<Open, String>;
}

/// What a new order of one customer may still hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub max_line_quantity: u32,
    /// Units the new order may reserve, when capped.
    pub units_left: Option<u64>,
    pub max_reserved_units: u32,
}

impl OrderCaps {
    /// A line of `quantity` units: refused beyond the line bound.
    pub fn check_quantity(&self, field: &str, quantity: i64) -> Result<(), Problem> {
        if quantity > i64::from(self.max_line_quantity) {
            return Err(Problem::invalid(
                field,
                format!(
                    "at most {} units per line (the shop's limit)",
                    self.max_line_quantity
                ),
            ));
        }
        Ok(())
    }

    /// What a new order of `customer_id` may hold, given its orders waiting for payment:
    /// refused at once when it has as many as it may.
    pub async fn allowance(
        &self,
        open_orders: &dyn OpenOrders,
        customer_id: &str,
    ) -> Result<Allowance, Problem> {
        let capped = self.max_open_orders > 0 || self.max_reserved_units > 0;
        let open = if capped && customer_id != identity::GUEST_CUSTOMER_ID {
            open_orders
                .open_orders(customer_id)
                .await
                .map_err(|error| {
                    Problem::unavailable_logged("open orders cannot be counted right now", &error)
                })?
        } else {
            return Ok(Allowance {
                max_line_quantity: self.max_line_quantity,
                units_left: None,
                max_reserved_units: 0,
            });
        };
        if self.max_open_orders > 0 && open.orders >= self.max_open_orders {
            return Err(Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "limit-reached",
                format!(
                    "at most {} orders may wait for payment at once (this customer has {}): wait until one is confirmed or cancelled",
                    self.max_open_orders, open.orders
                ),
            ));
        }
        Ok(Allowance {
            max_line_quantity: self.max_line_quantity,
            units_left: (self.max_reserved_units > 0)
                .then(|| u64::from(self.max_reserved_units).saturating_sub(open.units)),
            max_reserved_units: self.max_reserved_units,
        })
    }
}

impl Allowance {
    /// `lines` within the line bound and the units left.
    pub fn check(&self, lines: &[OrderLine]) -> Result<(), Problem> {
        for (index, line) in lines.iter().enumerate() {
            if line.quantity > self.max_line_quantity {
                return Err(Problem::invalid(
                    &format!("lines[{index}].quantity"),
                    format!(
                        "at most {} units per line (the shop's limit)",
                        self.max_line_quantity
                    ),
                ));
            }
        }
        let units: u64 = lines.iter().map(|line| u64::from(line.quantity)).sum();
        if let Some(left) = self.units_left
            && units > left
        {
            return Err(Problem::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "limit-reached",
                format!(
                    "orders waiting for payment may reserve at most {} units together; this one has {units} and {left} are left",
                    self.max_reserved_units
                ),
            )
            .with_field("lines"));
        }
        Ok(())
    }
}
