//! The state and members of a group of the consumer group protocol (KIP-848), which
//! `DescribeGroups` (librdkafka's group list) reports as `Dead` with no members: asked of the
//! group's coordinator with `ConsumerGroupDescribe`, spoken directly over the Kafka protocol,
//! to plaintext brokers only. The `exactly` tool asks the same way over TLS and SASL too
//! (`cli/src/admin.rs`); it is a binary crate, so the harness cannot share its code.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::Kafka;
use crate::coordinators::group_coordinator;

/// How long connecting, sending and waiting for the answer may each take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Kafka's error code GROUP_ID_NOT_FOUND: no group of the consumer protocol by that id.
const GROUP_ID_NOT_FOUND: i16 = 69;

/// The state (`Empty`, `Assigning`, `Reconciling`, `Stable`, ...) and the member count of
/// `group` as its coordinator describes it, when it is a group of the consumer protocol;
/// `None` when it is not (a classic group, or none), and on a [`Kafka::secure`] broker, which
/// this does not log in to.
pub fn consumer_group_state(kafka: &Kafka, group: &str) -> anyhow::Result<Option<(String, usize)>> {
    if kafka.client_config().get("security.protocol").is_some() {
        return Ok(None);
    }
    let coordinator = group_coordinator(kafka, group)?;
    let address = kafka.broker_address(coordinator)?;
    let key = StrBytes::from_string(group.to_owned());
    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(key.clone())]);
    // Version 0: the only one both kafka-protocol 0.15 and Kafka 4.0 and 4.1 know.
    let response = call(&address, &request, 0)?;
    let described = response
        .groups
        .into_iter()
        .find(|g| g.group_id.0 == key)
        .with_context(|| format!("broker {coordinator} did not describe group {group}"))?;
    match described.error_code {
        0 => Ok(Some((described.group_state.as_str().to_owned(), described.members.len()))),
        GROUP_ID_NOT_FOUND => Ok(None),
        code => anyhow::bail!("broker {coordinator} would not describe group {group}: Kafka error code {code}"),
    }
}

/// Fails unless `group` speaks `protocol`: a group of the consumer protocol, with `members`
/// members, answers `ConsumerGroupDescribe`; a classic group does not. A test of the
/// consumer protocol checks this, so that it cannot pass by running the classic one.
pub fn ensure_group_protocol(
    kafka: &Kafka,
    group: &str,
    protocol: exactly::GroupProtocol,
    members: usize,
) -> anyhow::Result<()> {
    let described = consumer_group_state(kafka, group)?;
    match protocol {
        exactly::GroupProtocol::Consumer => anyhow::ensure!(
            described.as_ref().is_some_and(|(_, n)| *n == members),
            "group {group} is not a group of the consumer protocol with {members} members: {described:?}"
        ),
        _ => anyhow::ensure!(described.is_none(), "group {group} speaks the consumer protocol: {described:?}"),
    }
    Ok(())
}

/// Sends `request` at `version` to the broker at `address`, on a connection of its own, and
/// reads the answer.
fn call<R: Request>(address: &str, request: &R, version: i16) -> anyhow::Result<R::Response> {
    let resolved = address.to_socket_addrs()?.next().with_context(|| format!("cannot resolve {address}"))?;
    let mut stream =
        TcpStream::connect_timeout(&resolved, TIMEOUT).with_context(|| format!("cannot connect to {address}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("exactly-tests")));
    let mut body = Vec::new();
    header.encode(&mut body, R::header_version(version))?;
    request.encode(&mut body, version)?;
    let mut frame = i32::try_from(body.len())?.to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    let mut length = [0; 4];
    stream.read_exact(&mut length)?;
    let mut answer = vec![0; usize::try_from(i32::from_be_bytes(length))?];
    stream.read_exact(&mut answer)?;
    let mut answer = answer.as_slice();
    let header = ResponseHeader::decode(&mut answer, R::Response::header_version(version))?;
    anyhow::ensure!(header.correlation_id == 1, "{address} answered request {} instead of 1", header.correlation_id);
    // Bytes left after the response (tagged fields of a newer broker) are ignored.
    R::Response::decode(&mut answer, version)
}
