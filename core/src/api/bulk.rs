//! Writing a batch in one round trip: PostgreSQL's binary `COPY`, built in memory and sent
//! on the batch's transaction.
//!
//! Two statements write a [`BatchHandler`](crate::BatchHandler)'s batch in one round trip:
//!
//! - `INSERT ... SELECT * FROM UNNEST($1::int8[], $2::text[], ...)`, each column bound
//!   once as an array: sqlx binds a `Vec<T>` (or `&[T]`) as a PostgreSQL array, so this
//!   needs nothing from exactly. It can be `INSERT ... ON CONFLICT`, an `UPDATE ... FROM
//!   UNNEST(...)`, anything a query can do.
//! - `COPY table (columns) FROM STDIN (FORMAT binary)`: PostgreSQL's bulk-load path, with no
//!   statement per row, the fastest way in, but it can only append rows. [`BinaryCopy`]
//!   writes its format (each field in PostgreSQL's binary form, so a `bytea` or `text` is sent
//!   as it is, with no escaping) and [`BinaryCopy::send`] runs it on the batch's
//!   transaction, so the rows commit with the position.
//!
//! ```
//! use exactly::bulk::BinaryCopy;
//! # async fn write(cx: &mut exactly::Context<'_>, readings: &[(i64, String, Vec<u8>)]) -> Result<(), exactly::BatchError> {
//! let mut copy = BinaryCopy::new();
//! for (id, name, body) in readings {
//!     copy.row().int8(*id).text(name).bytea(body);
//! }
//! copy.send(cx.db(), "COPY readings (id, name, body) FROM STDIN (FORMAT binary)").await?;
//! # Ok(()) }
//! ```
//!
//! Each field must match its column's type exactly (`int8` for `bigint`, `int4` for
//! `integer`, and so on): binary `COPY` does not convert, and a mismatch fails the batch
//! with PostgreSQL's error ("incorrect binary data format").

use sqlx::PgConnection;

/// The header of PostgreSQL's binary `COPY` format: its signature, then the flags and the
/// header extension's length, both zero.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Rows in PostgreSQL's binary `COPY` format, for `COPY ... FROM STDIN (FORMAT binary)`.
///
/// Built in memory (about the size of the rows' data, plus 2 bytes per row and 4 per
/// field), then sent in one go: its memory is bounded by the batch it is built from.
#[derive(Debug, Clone)]
pub struct BinaryCopy {
    buffer: Vec<u8>,
    rows: u64,
    /// Why the rows cannot be sent, once a field or row broke the format's limits.
    refused: Option<&'static str>,
}

impl Default for BinaryCopy {
    fn default() -> Self {
        Self::new()
    }
}

impl BinaryCopy {
    /// No rows yet.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// No rows yet, with room for about `bytes` of rows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buffer = Vec::with_capacity(HEADER.len() + bytes + 2);
        buffer.extend_from_slice(HEADER);
        Self { buffer, rows: 0, refused: None }
    }

    /// Starts a row: add its fields, in the columns' order, to what this returns.
    pub fn row(&mut self) -> CopyRow<'_> {
        let count_at = self.buffer.len();
        self.buffer.extend_from_slice(&0_i16.to_be_bytes());
        self.rows += 1;
        CopyRow { copy: self, count_at, fields: 0 }
    }

    /// How many rows it holds.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The whole stream, trailer included, as `COPY ... FROM STDIN (FORMAT binary)` reads it.
    ///
    /// # Errors
    /// When a field was 2 GiB or more, or a row had more than 32 767 fields: the format
    /// cannot carry them.
    pub fn into_bytes(mut self) -> Result<Vec<u8>, sqlx::Error> {
        if let Some(refused) = self.refused {
            return Err(sqlx::Error::Encode(refused.into()));
        }
        self.buffer.extend_from_slice(&(-1_i16).to_be_bytes());
        Ok(self.buffer)
    }

    /// Runs `statement` (a `COPY ... FROM STDIN (FORMAT binary)`) on `conn` and sends the
    /// rows; returns how many PostgreSQL stored. On a handler's [`Context::db`](crate::Context::db)
    /// this is inside the batch's transaction: the rows commit with its position.
    ///
    /// # Errors
    /// PostgreSQL's error when the statement is not such a `COPY`, or a field does not
    /// match its column; [`sqlx::Error::Encode`] when the rows break the format's limits
    /// (see [`BinaryCopy::into_bytes`]).
    pub async fn send(self, conn: &mut PgConnection, statement: &str) -> Result<u64, sqlx::Error> {
        let bytes = self.into_bytes()?;
        let mut copy = conn.copy_in_raw(statement).await?;
        if let Err(error) = copy.send(bytes).await {
            // Leaves the connection usable (the transaction rolls back with the batch).
            let _ = copy.abort(error.to_string()).await;
            return Err(error);
        }
        copy.finish().await
    }
}

/// One row of a [`BinaryCopy`]: add its fields in the columns' order.
#[derive(Debug)]
pub struct CopyRow<'c> {
    copy: &'c mut BinaryCopy,
    /// Where the row's field count is, written again as each field is added.
    count_at: usize,
    fields: i16,
}

impl CopyRow<'_> {
    /// A field already in PostgreSQL's binary form for its column's type (`bytea` and
    /// `text` are their bytes as they are). A field of 2 GiB or more, which the format
    /// cannot carry, makes [`BinaryCopy::send`] fail.
    pub fn binary(self, value: &[u8]) -> Self {
        self.field(value.len(), value)
    }

    /// SQL `NULL`.
    pub fn null(mut self) -> Self {
        if self.count() {
            self.copy.buffer.extend_from_slice(&(-1_i32).to_be_bytes());
        }
        self
    }

    /// A `bytea` field.
    pub fn bytea(self, value: &[u8]) -> Self {
        self.binary(value)
    }

    /// A `text` (or `varchar`) field.
    pub fn text(self, value: &str) -> Self {
        self.binary(value.as_bytes())
    }

    /// A `jsonb` field, from its JSON text.
    pub fn jsonb(self, json: &str) -> Self {
        // jsonb's binary form is a version byte (1) and the text.
        self.field(json.len() + 1, &[1]).extend(json.as_bytes())
    }

    /// A `boolean` field.
    pub fn bool(self, value: bool) -> Self {
        self.binary(&[u8::from(value)])
    }

    /// A `smallint` (`int2`) field.
    pub fn int2(self, value: i16) -> Self {
        self.binary(&value.to_be_bytes())
    }

    /// An `integer` (`int4`) field.
    pub fn int4(self, value: i32) -> Self {
        self.binary(&value.to_be_bytes())
    }

    /// A `bigint` (`int8`) field.
    pub fn int8(self, value: i64) -> Self {
        self.binary(&value.to_be_bytes())
    }

    /// A `real` (`float4`) field.
    pub fn float4(self, value: f32) -> Self {
        self.binary(&value.to_be_bytes())
    }

    /// A `double precision` (`float8`) field.
    pub fn float8(self, value: f64) -> Self {
        self.binary(&value.to_be_bytes())
    }

    /// Appends a field of `length` bytes, starting with `value`; counts it in the row.
    fn field(mut self, length: usize, value: &[u8]) -> Self {
        let Ok(length) = i32::try_from(length) else {
            self.copy.refused = Some("a COPY field is 2 GiB or more, which the binary format cannot carry");
            return self;
        };
        if self.count() {
            self.copy.buffer.extend_from_slice(&length.to_be_bytes());
            self.copy.buffer.extend_from_slice(value);
        }
        self
    }

    /// Counts one more field in the row's header; `false` when the row has too many.
    fn count(&mut self) -> bool {
        let Some(fields) = self.fields.checked_add(1) else {
            self.copy.refused = Some("a COPY row has more than 32 767 fields, which the binary format cannot carry");
            return false;
        };
        self.fields = fields;
        let at = self.count_at;
        self.copy.buffer[at..at + 2].copy_from_slice(&fields.to_be_bytes());
        true
    }

    /// Appends bytes to the field just added (whose length counted them).
    fn extend(self, bytes: &[u8]) -> Self {
        self.copy.buffer.extend_from_slice(bytes);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::BinaryCopy;

    #[test]
    fn rows_are_framed_between_the_header_and_the_trailer_with_their_field_counts() -> Result<(), sqlx::Error> {
        let mut copy = BinaryCopy::new();
        copy.row().int4(2).int8(7).bytea(b"ab");
        copy.row().null().text("é").bool(true);
        assert_eq!(copy.rows(), 2);
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[0, 3, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0xc3, 0xa9, 0, 0, 0, 1, 1]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(copy.into_bytes()?, expected);
        Ok(())
    }

    #[test]
    fn jsonb_carries_its_version_byte_inside_its_length() -> Result<(), sqlx::Error> {
        let mut copy = BinaryCopy::new();
        copy.row().jsonb("{}");
        let bytes = copy.into_bytes()?;
        assert_eq!(&bytes[19..], &[0, 1, 0, 0, 0, 3, 1, b'{', b'}', 0xff, 0xff]);
        Ok(())
    }

    #[test]
    fn a_row_of_more_fields_than_the_format_counts_is_refused_not_sent_corrupt() {
        let mut copy = BinaryCopy::new();
        let mut row = copy.row();
        for _ in 0..=i16::MAX {
            row = row.bool(true);
        }
        let refused = copy.into_bytes();
        assert!(matches!(&refused, Err(sqlx::Error::Encode(e)) if e.to_string().contains("32 767")), "{refused:?}");
    }
}
