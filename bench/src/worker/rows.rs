//! How a batch of rows reaches PostgreSQL: one `INSERT` per row, one `INSERT ... SELECT
//! FROM UNNEST(...)` per batch, or one binary `COPY ... FROM STDIN` per batch. The
//! hand-written baselines, the PostgreSQL-alone ceilings and exactly's handlers share
//! these statements, so that a row of the report differs from another in one thing only.

use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, PgConnection};

/// One message as the row it becomes.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) payload: Vec<u8>,
}

impl Row {
    /// The row of a message read from Kafka.
    pub(crate) fn of(message: &impl rdkafka::Message) -> Self {
        Row {
            partition: message.partition(),
            offset: message.offset(),
            payload: message.payload().unwrap_or_default().to_vec(),
        }
    }
}

/// A message as the three columns of its row, whoever holds it: the baselines' [`Row`]s
/// and exactly's messages go through the same statements, bound by the same code.
pub(crate) trait RowFields {
    /// The `partition` column.
    fn partition(&self) -> i32;
    /// The `message_offset` column.
    fn offset(&self) -> i64;
    /// The `payload` column.
    fn payload(&self) -> &[u8];
}

/// Implements [`RowFields`] for a type whose `partition`, `offset` and `payload` fields
/// are its row's columns: the baselines' [`Row`], and exactly's messages as its handlers
/// are given them (written once for both).
macro_rules! row_fields_from_fields {
    ($type:ty) => {
        impl RowFields for $type {
            fn partition(&self) -> i32 {
                self.partition
            }

            fn offset(&self) -> i64 {
                self.offset
            }

            fn payload(&self) -> &[u8] {
                &self.payload
            }
        }
    };
}

row_fields_from_fields!(Row);
row_fields_from_fields!(exactly::Message<Vec<u8>, bytes::Bytes>);

/// A batch handler is given references to its messages: they are rows as they are.
impl<T: RowFields + ?Sized> RowFields for &T {
    fn partition(&self) -> i32 {
        (**self).partition()
    }

    fn offset(&self) -> i64 {
        (**self).offset()
    }

    fn payload(&self) -> &[u8] {
        (**self).payload()
    }
}

/// The statement shape that writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Statement {
    /// One `INSERT ... VALUES ($1, $2, $3)` per row (a prepared statement): one round trip
    /// per row, as exactly's per-message handler does.
    PerRow,
    /// One `INSERT ... SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::bytea[])` per
    /// batch: the columns bound once as arrays, one round trip per batch.
    Unnest,
    /// One `COPY ... FROM STDIN (FORMAT binary)` per batch: PostgreSQL's bulk-load path,
    /// with no per-row statement at all.
    Copy,
}

/// Writes batches of [`Row`]s into one table with one [`Statement`] shape.
#[derive(Debug, Clone)]
pub(crate) struct RowWriter {
    statement: Statement,
    sql: String,
}

impl RowWriter {
    /// A writer into `table`.
    ///
    /// # Errors
    /// When `table` is not a plain SQL name (it arrives in a command-line argument).
    pub(crate) fn new(table: &str, statement: Statement) -> anyhow::Result<Self> {
        let table = crate::bed::sql_name(table)?;
        let columns = "(partition, message_offset, payload)";
        let sql = match statement {
            Statement::PerRow => format!("INSERT INTO {table} {columns} VALUES ($1, $2, $3)"),
            Statement::Unnest => {
                format!("INSERT INTO {table} {columns} SELECT * FROM UNNEST($1::int4[], $2::int8[], $3::bytea[])")
            }
            Statement::Copy => format!("COPY {table} {columns} FROM STDIN (FORMAT binary)"),
        };
        Ok(Self { statement, sql })
    }

    /// The statement shape it writes with.
    pub(crate) fn statement(&self) -> Statement {
        self.statement
    }

    /// Its SQL text: for [`Statement::Copy`], the `COPY ... FROM STDIN (FORMAT binary)`
    /// that a caller with its own encoder (exactly's `BinaryCopy`) runs.
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    /// Writes `rows` on `conn` (inside the caller's transaction, if it has one). Returns
    /// sqlx's error as it is, so that exactly's handlers can tell a transient one.
    pub(crate) async fn write<R: RowFields + Sync>(
        &self,
        conn: &mut PgConnection,
        rows: &[R],
    ) -> Result<(), sqlx::Error> {
        match self.statement {
            Statement::PerRow => {
                for row in rows {
                    sqlx::query(AssertSqlSafe(self.sql.as_str()))
                        .bind(row.partition())
                        .bind(row.offset())
                        .bind(row.payload())
                        .execute(&mut *conn)
                        .await?;
                }
            }
            Statement::Unnest => {
                let partitions: Vec<i32> = rows.iter().map(RowFields::partition).collect();
                let offsets: Vec<i64> = rows.iter().map(RowFields::offset).collect();
                let payloads: Vec<&[u8]> = rows.iter().map(RowFields::payload).collect();
                sqlx::query(AssertSqlSafe(self.sql.as_str()))
                    .bind(partitions)
                    .bind(offsets)
                    .bind(payloads)
                    .execute(&mut *conn)
                    .await?;
            }
            Statement::Copy => {
                let mut copy = conn.copy_in_raw(&self.sql).await?;
                copy.send(binary_copy(rows)).await?;
                copy.finish().await?;
            }
        }
        Ok(())
    }
}

/// The bytes `rows` take in PostgreSQL's binary `COPY` format, header and trailer aside:
/// per row its field count (2), the partition (4 + 4), the offset (4 + 8) and the payload
/// (4 + its length). Both encoders size their buffer with it.
pub(crate) fn copy_bytes<R: RowFields>(rows: &[R]) -> usize {
    rows.iter().map(|row| 2 + 8 + 12 + 4 + row.payload().len()).sum()
}

/// `rows` in PostgreSQL's binary `COPY` format: the signature, flags and header extension,
/// then per row its field count and each field as length and big-endian bytes, then the
/// trailer. Binary, not text, so that the `bytea` payload is sent as it is rather than
/// escaped. The baselines' own encoder: exactly's handlers use exactly's `BinaryCopy`.
fn binary_copy<R: RowFields>(rows: &[R]) -> Vec<u8> {
    let mut out = Vec::with_capacity(19 + copy_bytes(rows) + 2);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
    out.extend_from_slice(&0_i32.to_be_bytes()); // header extension: none
    for row in rows {
        out.extend_from_slice(&3_i16.to_be_bytes());
        out.extend_from_slice(&4_i32.to_be_bytes());
        out.extend_from_slice(&row.partition().to_be_bytes());
        out.extend_from_slice(&8_i32.to_be_bytes());
        out.extend_from_slice(&row.offset().to_be_bytes());
        // A payload over 2 GiB cannot be a Kafka record; the cast cannot truncate one.
        out.extend_from_slice(&i32::try_from(row.payload().len()).unwrap_or(i32::MAX).to_be_bytes());
        out.extend_from_slice(row.payload());
    }
    out.extend_from_slice(&(-1_i16).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::{Row, binary_copy};

    #[test]
    fn binary_copy_frames_each_row_between_the_header_and_the_trailer() {
        let rows = [Row { partition: 2, offset: 7, payload: b"ab".to_vec() }];
        let bytes = binary_copy(&rows);
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b', 0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
