//! Kafka's admin calls that librdkafka does not have, spoken directly over the Kafka
//! protocol: `ListTransactions` to every broker (each lists the transactions it coordinates)
//! and `DescribeTransactions` to the one that listed an id; and `ConsumerGroupDescribe` to
//! a group's coordinator, for the state and members of a group of the consumer group
//! protocol (KIP-848), which `DescribeGroups` (librdkafka's group list) reports as `Dead`
//! with no members.
//!
//! The calls go over the same security as the tool's other Kafka clients ([`crate::wire`]):
//! PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, with SASL mechanism PLAIN, SCRAM-SHA-256 or
//! SCRAM-SHA-512. With GSSAPI or OAUTHBEARER the tool says that it cannot name the
//! transactional ids, and shows the open transactions it sees from the partitions' last
//! stable offsets instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, ConsumerGroupDescribeRequest, DescribeTransactionsRequest, FindCoordinatorRequest, GroupId,
    ListTransactionsRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
    TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::error::{Context, Error};
use crate::wire::{Mechanism, Sasl, Scram, Security, Stream};

const TIMEOUT: Duration = Duration::from_secs(15);
/// Responses larger than this are refused (a broker never sends one for these calls).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Kafka's error code GROUP_ID_NOT_FOUND: `ConsumerGroupDescribe` knows no group of the
/// consumer protocol by that id (the group is a classic one, or there is none).
const GROUP_ID_NOT_FOUND: i16 = 69;
/// FindCoordinator's key type for a consumer group.
const GROUP_KEY: i8 = 0;

/// One ongoing transaction, as its coordinator describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Transaction {
    pub(crate) transactional_id: String,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) state: String,
    /// When it began (ms since the epoch).
    pub(crate) started_ms: i64,
    pub(crate) timeout_ms: i32,
    /// The partitions it wrote to, `topic/partition`.
    pub(crate) partitions: Vec<String>,
    /// The broker coordinating it.
    pub(crate) coordinator: i32,
}

/// Whether the admin calls can reach the brokers: over every protocol, with SASL only
/// through PLAIN or SCRAM.
pub(crate) fn usable(config: &ClientConfig) -> bool {
    matches!(Security::from_config(config), Ok(Some(_)))
}

/// Every transaction in state `Ongoing` on the cluster.
pub(crate) fn ongoing(config: &ClientConfig) -> Result<Vec<Transaction>, Error> {
    let security = Security::from_config(config)?
        .ok_or_else(|| Error::Usage("the tool cannot log in with this SASL mechanism itself".into()))?;
    let client: BaseConsumer = config.create().context(|| "cannot create a Kafka client".to_owned())?;
    let metadata = client.fetch_metadata(None, TIMEOUT).context(|| "cannot read the cluster's brokers".to_owned())?;
    let mut found = Vec::new();
    for broker in metadata.brokers() {
        let address = format!("{}:{}", broker.host(), broker.port());
        let mut connection = Connection::open(&address, &security)?;
        let listed = connection.call(
            ListTransactionsRequest::default().with_state_filters(vec![StrBytes::from_static_str("Ongoing")]),
            0,
        )?;
        if listed.error_code != 0 {
            return Err(Error::Unfinished(format!(
                "broker {} refused to list its transactions (Kafka error code {})",
                broker.id(),
                listed.error_code
            )));
        }
        if listed.transaction_states.is_empty() {
            continue;
        }
        let ids: Vec<TransactionalId> =
            listed.transaction_states.into_iter().map(|state| state.transactional_id).collect();
        let described = connection.call(DescribeTransactionsRequest::default().with_transactional_ids(ids), 0)?;
        for state in described.transaction_states {
            if state.error_code != 0 || state.transaction_state.as_str() != "Ongoing" {
                continue; // ended meanwhile, or moved to another coordinator
            }
            found.push(Transaction {
                transactional_id: state.transactional_id.0.as_str().to_owned(),
                producer_id: state.producer_id.0,
                producer_epoch: state.producer_epoch,
                state: state.transaction_state.as_str().to_owned(),
                started_ms: state.transaction_start_time_ms,
                timeout_ms: state.transaction_timeout_ms,
                partitions: state
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| format!("{}/{p}", t.topic.0.as_str())))
                    .collect(),
                coordinator: broker.id(),
            });
        }
    }
    found.sort_by_key(|t| t.started_ms);
    Ok(found)
}

/// The state (`Empty`, `Assigning`, `Reconciling`, `Stable`, ...) and the member count of
/// `group` as its coordinator describes it, when it is a group of the consumer group
/// protocol; `None` when it is not (a classic group, or no group), or when the brokers do not
/// speak that protocol (they do not offer `ConsumerGroupDescribe`).
///
/// # Errors
/// When the brokers offer the call but cannot be asked or do not answer it.
pub(crate) fn consumer_group(config: &ClientConfig, group: &str) -> Result<Option<(String, usize)>, Error> {
    let security = Security::from_config(config)?
        .ok_or_else(|| Error::Usage("the tool cannot log in with this SASL mechanism itself".into()))?;
    let client: BaseConsumer = config.create().context(|| "cannot create a Kafka client".to_owned())?;
    let metadata = client.fetch_metadata(None, TIMEOUT).context(|| "cannot read the cluster's brokers".to_owned())?;
    let broker =
        metadata.brokers().first().ok_or_else(|| Error::Unfinished("the cluster lists no brokers".to_owned()))?;
    let mut connection = Connection::open(&format!("{}:{}", broker.host(), broker.port()), &security)?;
    // Version 0 of ApiVersions is answered by every broker; one without the call has no
    // group of the consumer protocol to describe.
    let versions = connection.call(ApiVersionsRequest::default(), 0)?;
    if !versions.api_keys.iter().any(|api| api.api_key == ConsumerGroupDescribeRequest::KEY) {
        return Ok(None);
    }
    let key = StrBytes::from_string(group.to_owned());
    // Version 4 (Kafka 3.0 and later, so every broker with ConsumerGroupDescribe) takes a list of keys.
    let request = FindCoordinatorRequest::default().with_key_type(GROUP_KEY).with_coordinator_keys(vec![key.clone()]);
    let found = connection.call(request, 4)?;
    let coordinator =
        found.coordinators.into_iter().find(|c| c.key == key).ok_or_else(|| {
            Error::Unfinished(format!("broker {} named no coordinator of group {group}", broker.id()))
        })?;
    if coordinator.error_code != 0 {
        return Err(Error::Unfinished(format!(
            "cannot find the coordinator of group {group} (Kafka error code {}); try again",
            coordinator.error_code
        )));
    }
    let address = format!("{}:{}", coordinator.host.as_str(), coordinator.port);
    let mut connection = Connection::open(&address, &security)?;
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(key.clone())]);
    let described = connection.call(request, 0)?;
    let described =
        described.groups.into_iter().find(|g| g.group_id.0 == key).ok_or_else(|| {
            Error::Unfinished(format!("broker {} did not describe group {group}", coordinator.node_id.0))
        })?;
    match described.error_code {
        0 => Ok(Some((described.group_state.as_str().to_owned(), described.members.len()))),
        GROUP_ID_NOT_FOUND => Ok(None),
        code => Err(Error::Unfinished(format!(
            "broker {} would not describe group {group} (Kafka error code {code}{})",
            coordinator.node_id.0,
            described.error_message.as_ref().map(|m| format!(": {}", m.as_str())).unwrap_or_default()
        ))),
    }
}

/// A connection to one broker.
struct Connection {
    address: String,
    stream: Stream,
    correlation: i32,
}

impl Connection {
    /// Connects (TCP, then TLS if asked for) and logs in (SASL if asked for).
    fn open(address: &str, security: &Security) -> Result<Self, Error> {
        let failed = |e: std::io::Error| Error::Unfinished(format!("cannot connect to broker {address}: {e}"));
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(failed)?
            .next()
            .ok_or_else(|| Error::Unfinished(format!("cannot resolve broker address {address}")))?;
        let stream = TcpStream::connect_timeout(&resolved, TIMEOUT).map_err(failed)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(failed)?;
        let host =
            address.rsplit_once(':').map_or(address, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
        let stream = security.wrap(host, stream)?;
        let mut connection = Self { address: address.to_owned(), stream, correlation: 0 };
        if let Some(sasl) = &security.sasl {
            connection.log_in(sasl)?;
        }
        Ok(connection)
    }

    /// SaslHandshake, then SaslAuthenticate rounds (KIP-152).
    fn log_in(&mut self, sasl: &Sasl) -> Result<(), Error> {
        let mechanism = sasl.mechanism.name();
        let handshake =
            self.call(SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)), 1)?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(Error::Unfinished(format!(
                "broker {} does not accept SASL mechanism {mechanism} (it offers {})",
                self.address,
                offered.join(", ")
            )));
        }
        match sasl.mechanism {
            Mechanism::Plain => {
                self.sasl_round(sasl, format!("\0{}\0{}", sasl.username, sasl.password).into_bytes())?;
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let mut scram = Scram::new(sasl.mechanism, &sasl.username, &sasl.password)?;
                let server_first = self.sasl_round(sasl, scram.client_first().into_bytes())?;
                let client_final = scram.client_final(&String::from_utf8_lossy(&server_first))?;
                let server_final = self.sasl_round(sasl, client_final.into_bytes())?;
                scram.verify_server_final(&String::from_utf8_lossy(&server_final))?;
            }
        }
        Ok(())
    }

    /// One SaslAuthenticate round: sends `bytes`, returns the broker's.
    fn sasl_round(&mut self, sasl: &Sasl, bytes: Vec<u8>) -> Result<Bytes, Error> {
        let response = self.call(SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)), 1)?;
        if response.error_code != 0 {
            return Err(Error::Unfinished(format!(
                "broker {} refused the credentials of user {} ({}): {}",
                self.address,
                sasl.username,
                sasl.mechanism.name(),
                response.error_message.as_ref().map_or("authentication failed", |m| m.as_str())
            )));
        }
        Ok(response.auth_bytes)
    }

    /// Sends `request` at `version` and reads its response.
    fn call<R: Request>(&mut self, request: R, version: i16) -> Result<R::Response, Error> {
        let broken = |what: String| Error::Unfinished(format!("broker {}: {what}", self.address));
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("exactly-cli")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| broken(format!("cannot encode a request: {e}")))?;
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(i32::try_from(body.len()).map_err(|_| broken("request too large".into()))?);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame).map_err(|e| broken(format!("cannot send: {e}")))?;

        let mut length = [0; 4];
        self.stream.read_exact(&mut length).map_err(|e| broken(format!("no answer: {e}")))?;
        let length = usize::try_from(i32::from_be_bytes(length)).unwrap_or(usize::MAX);
        if length > MAX_RESPONSE {
            return Err(broken(format!("an answer of {length} bytes")));
        }
        let mut response = vec![0; length];
        self.stream.read_exact(&mut response).map_err(|e| broken(format!("answer cut short: {e}")))?;
        let mut response = Bytes::from(response);
        let header = ResponseHeader::decode(&mut response, R::Response::header_version(version))
            .map_err(|e| broken(format!("cannot read an answer: {e}")))?;
        if header.correlation_id != self.correlation {
            return Err(broken(format!("answer {} to request {}", header.correlation_id, self.correlation)));
        }
        // Bytes left after the response (tagged fields of a newer broker) are ignored.
        R::Response::decode(&mut response, version).map_err(|e| broken(format!("cannot read an answer: {e}")))
    }
}
