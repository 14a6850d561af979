//! Properties of the domain that must hold for any input, not only for the examples in the
//! given/when/then tests beside each aggregate.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::test::TestFramework;
use domain::order::OrderLine;
use domain::product::STOCK_MAX;
use domain::{
    CustomerId, Money, Order, OrderCommand, OrderEvent, Product, ProductCommand, ProductEvent,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Runs a decision to its end. Aggregates do no I/O, so a decision never has to wait.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an aggregate waited on something while deciding"),
    }
}

/// Handles `command` on `product` as the framework does, returning the result and the events
/// written (which `product` has already applied).
fn handle(
    product: &mut Product,
    command: ProductCommand,
) -> (Result<(), domain::ProductError>, Vec<ProductEvent>) {
    let event_sink = EventSink::<Product>::default();
    let result = block_on(product.handle(command, &(), &event_sink));
    (result, block_on(event_sink.collect()))
}

fn order(number: u8) -> Uuid {
    Uuid::from_u128(0x0a0d_0000 + u128::from(number))
}

/// Mostly small figures, so that reservations collide with the stock, and now and then figures
/// up to the limits.
fn quantity() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0_u32..=25, 1 => 0_u32..=STOCK_MAX, 1 => any::<u32>()]
}

fn delta() -> impl Strategy<Value = i64> {
    let stock_max = i64::from(STOCK_MAX);
    prop_oneof![
        8 => -30_i64..=30,
        1 => -stock_max..=stock_max,
        1 => any::<i64>(),
    ]
}

/// One step of a random stock history.
#[derive(Clone, Debug)]
enum StockStep {
    Command(ProductCommand),
    /// An `AdjustStock` whose delta brings the stock to `target`, worked out when the step runs,
    /// so that histories reach the stock ceiling while reservations are open.
    AdjustStockTo {
        target: u32,
    },
}

impl StockStep {
    fn command(self, product: &Product) -> ProductCommand {
        match self {
            StockStep::Command(command) => command,
            StockStep::AdjustStockTo { target } => ProductCommand::AdjustStock {
                delta: i64::from(target) - i64::from(product.stock_qty),
            },
        }
    }
}

fn stock_step() -> impl Strategy<Value = StockStep> {
    // A handful of orders, so that the same order is reserved, released and committed again.
    let order_number = 0_u8..6;
    prop_oneof![
        3 => (order_number.clone(), quantity()).prop_map(|(number, quantity)| {
            StockStep::Command(ProductCommand::ReserveStock {
                order_id: order(number),
                quantity,
            })
        }),
        2 => order_number.clone().prop_map(|number| {
            StockStep::Command(ProductCommand::ReleaseStock {
                order_id: order(number),
            })
        }),
        2 => order_number.prop_map(|number| {
            StockStep::Command(ProductCommand::CommitStock {
                order_id: order(number),
            })
        }),
        2 => delta().prop_map(|delta| StockStep::Command(ProductCommand::AdjustStock { delta })),
        1 => prop_oneof![0_u32..=40, STOCK_MAX - 40..=STOCK_MAX]
            .prop_map(|target| StockStep::AdjustStockTo { target }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stock_never_goes_negative_and_always_equals_initial_plus_adjustments_minus_reservations(
        initial_stock in prop_oneof![3 => 0_u32..=40, 1 => 0_u32..=STOCK_MAX],
        steps in prop::collection::vec(stock_step(), 0..80),
    ) {
        let mut product = Product::default();
        let (result, _) = handle(&mut product, ProductCommand::CreateProduct {
            product_id: Uuid::from_u128(1),
            name: "Kettle".to_owned(),
            description: String::new(),
            price: Money::from_minor(2_499),
            stock_qty: i64::from(initial_stock),
            category: None,
        });
        prop_assert!(result.is_ok());

        let mut adjustments: i128 = 0;
        let mut open_reservations: BTreeMap<Uuid, u32> = BTreeMap::new();
        let mut committed: i128 = 0;
        for step in steps {
            let command = step.command(&product);
            let before = product.clone();
            let (result, events) = handle(&mut product, command.clone());
            if result.is_err() {
                prop_assert!(events.is_empty(), "{command:?} failed yet emitted {events:?}");
                prop_assert_eq!(&product, &before);
                continue;
            }
            if events.is_empty() {
                prop_assert_eq!(&product, &before, "{:?} emitted nothing yet changed the product", command);
                continue;
            }
            // A change is its own event followed by the full product at its stream version.
            prop_assert_eq!(events.len(), 2, "{:?}", events);
            let ProductEvent::ProductUpdated(updated) = &events[1] else {
                panic!("{command:?} emitted {events:?}, not a change followed by ProductUpdated");
            };
            prop_assert_eq!(updated.stock_qty, product.stock_qty);
            prop_assert_eq!(updated.version, product.version);
            match command {
                ProductCommand::AdjustStock { delta } => adjustments += i128::from(delta),
                ProductCommand::ReserveStock { order_id, quantity } => {
                    prop_assert!(open_reservations.insert(order_id, quantity).is_none());
                }
                ProductCommand::ReleaseStock { order_id } => {
                    prop_assert!(open_reservations.remove(&order_id).is_some());
                }
                ProductCommand::CommitStock { order_id } => {
                    let quantity = open_reservations.remove(&order_id);
                    prop_assert!(quantity.is_some());
                    committed += quantity.map_or(0, i128::from);
                }
                other => panic!("unexpected command {other:?}"),
            }
            let reserved: i128 = open_reservations.values().map(|&quantity| i128::from(quantity)).sum();
            let expected_stock = i128::from(initial_stock) + adjustments - reserved - committed;
            prop_assert!(expected_stock >= 0, "stock went negative: {expected_stock}");
            prop_assert_eq!(i128::from(product.stock_qty), expected_stock);
            prop_assert!(product.stock_qty <= STOCK_MAX);
            prop_assert_eq!(&product.reservations, &open_reservations);
        }
    }

    #[test]
    fn an_orders_total_equals_the_sum_of_quantity_times_unit_price_of_its_lines(
        line_figures in prop::collection::btree_map(
            any::<u128>(),
            (1_u32..=999, prop_oneof![1_i64..=10_000, 1_i64..=Money::MAX.minor()]),
            1..=100,
        ),
    ) {
        let lines: Vec<OrderLine> = line_figures
            .iter()
            .map(|(&product_number, &(quantity, unit_price_minor))| OrderLine {
                product_id: Uuid::from_u128(product_number),
                quantity,
                unit_price: Money::from_minor(unit_price_minor),
            })
            .collect();
        let expected_total: i128 = line_figures
            .values()
            .map(|&(quantity, unit_price_minor)| i128::from(quantity) * i128::from(unit_price_minor))
            .sum();
        let events = TestFramework::<Order>::with(())
            .given_no_previous_events()
            .when(OrderCommand::CreateOrder {
                order_id: Uuid::from_u128(7),
                customer_id: CustomerId::parse("alice").expect("a valid customer id"),
                lines,
                payment_ref: Some("vault:order".to_owned()),
                cart_id: None,
                shipping_address: None,
                billing_address: None,
                payment_method: domain::PaymentMethod::Card,
            })
            .inspect_result();
        let Ok([OrderEvent::OrderCreated(created)]) = events.as_deref() else {
            panic!("valid lines were refused: {events:?}");
        };
        prop_assert_eq!(i128::from(created.total.minor()), expected_total);
    }

    #[test]
    fn printing_then_parsing_money_gives_the_same_amount(
        minor in prop_oneof![
            1 => Just(Money::MAX.minor()),
            1 => Just(-Money::MAX.minor()),
            1 => Just(0),
            20 => -Money::MAX.minor()..=Money::MAX.minor(),
        ],
    ) {
        let money = Money::from_minor(minor);
        prop_assert_eq!(Money::parse_decimal(&money.to_string()), Ok(money));
    }

    #[test]
    fn parsing_a_decimal_with_at_most_two_decimals_gives_exactly_its_cents(
        minor in prop_oneof![
            1 => Just(Money::MAX.minor()),
            1 => Just(0),
            20 => 0..=Money::MAX.minor(),
        ],
        negative in any::<bool>(),
        n_leading_zeros in 0_usize..3,
        n_decimals in 0_usize..=2,
    ) {
        let (integer, cents) = (minor / 100, minor % 100);
        // Fewer decimals than needed would change the amount, so use at least that many.
        let n_decimals_needed = match cents {
            0 => 0,
            c if c % 10 == 0 => 1,
            _ => 2,
        };
        let fraction = match n_decimals.max(n_decimals_needed) {
            0 => String::new(),
            1 => format!(".{}", cents / 10),
            _ => format!(".{cents:02}"),
        };
        let sign = if negative { "-" } else { "" };
        let text = format!("{sign}{}{integer}{fraction}", "0".repeat(n_leading_zeros));
        let expected = if negative { -(integer * 100 + cents) } else { integer * 100 + cents };
        prop_assert_eq!(Money::parse_decimal(&text), Ok(Money::from_minor(expected)), "{}", text);
    }
}
