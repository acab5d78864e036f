//! Invoice creation through the database's `create_invoice(...)` function, the single source of
//! truth for race-free publish_amount allocation (services, tests and psctl's smoke all use it).

use rust_decimal::Decimal;
use sqlx::PgExecutor;
use uuid::Uuid;

/// What to invoice.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    pub merchant_id: Uuid,
    pub coin: String,
    pub network: String,
    pub address: String,
    pub base_amount: Decimal,
    pub is_smoke: bool,
}

/// The allocated invoice.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Invoice {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub coin: String,
    pub network: String,
    pub address: String,
    pub base_amount: Decimal,
    pub publish_amount: Decimal,
    /// Steps skipped because another pending invoice held them (feeds `problemsolver_collisions_total`).
    pub allocation_collisions: i32,
    pub status: String,
}

/// Creates an invoice with the default step (0.0001) and time-to-live (1 hour).
pub async fn create_invoice<'e>(
    executor: impl PgExecutor<'e>,
    new: &NewInvoice,
) -> Result<Invoice, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, merchant_id, coin, network, address, base_amount, publish_amount,
                allocation_collisions, status
           FROM create_invoice(p_merchant_id => $1, p_coin => $2, p_network => $3, p_address => $4,
                               p_base_amount => $5, p_is_smoke => $6)",
    )
    .bind(new.merchant_id)
    .bind(&new.coin)
    .bind(&new.network)
    .bind(&new.address)
    .bind(new.base_amount)
    .bind(new.is_smoke)
    .fetch_one(executor)
    .await
}
