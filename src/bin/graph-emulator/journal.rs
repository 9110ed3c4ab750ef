//! Request log and counters of the Graph and token endpoints.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::context::{Endpoint, RequestContext, RequestFacts};

/// One request in the log. It never contains tokens, secrets, bodies or
/// query strings.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub seq: u64,
    /// RFC 3339 time at which the request arrived.
    pub time: String,
    pub method: String,
    pub path: String,
    /// `graph`, `token` or `other`.
    pub endpoint: &'static str,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    /// None when no response was sent: a fault rule closed the connection,
    /// or the client closed it while the request waited.
    pub status: Option<u16>,
    pub request_id: String,
    pub client_request_id: Option<String>,
    pub fault_injected: bool,
}

/// Request counts of one tenant, or of all tenants together.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub token_requests: u64,
    pub tokens_issued: u64,
    pub gets: u64,
    pub patches: u64,
    pub deletes: u64,
    /// 429 responses, from the throttle or from fault rules.
    pub throttled: u64,
    /// Requests that arrived before the Retry-After of an earlier response
    /// (429, or a 503 or other error status with the header) to the same
    /// tenant and endpoint had passed.
    pub retry_after_violations: u64,
    pub faults_injected: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub totals: Counters,
    pub tenants: BTreeMap<String, Counters>,
    /// The most Graph and token requests being handled at the same time,
    /// from arrival to response (latency included).
    pub max_in_flight: u64,
}

/// A finished request, as the middleware reports it.
pub struct Observation<'a> {
    pub context: &'a RequestContext,
    pub method: &'a Method,
    pub path: &'a str,
    pub facts: &'a RequestFacts,
    /// None when the connection is closed without a response.
    pub status: Option<StatusCode>,
    /// Retry-After of the response, in seconds.
    pub retry_after: Option<u64>,
}

pub struct Journal {
    limit: usize,
    next_seq: u64,
    entries: VecDeque<LogEntry>,
    stats: Stats,
    /// When the latest Retry-After sent to each (endpoint, tenant) ends.
    retry_after_until: HashMap<(Endpoint, String), Instant>,
    /// Graph and token requests being handled now.
    in_flight: u64,
}

impl Journal {
    /// Creates a journal that keeps the last `limit` log entries.
    pub fn new(limit: usize) -> Self {
        Journal {
            limit,
            next_seq: 1,
            entries: VecDeque::new(),
            stats: Stats::default(),
            retry_after_until: HashMap::new(),
            in_flight: 0,
        }
    }

    /// Counts a Graph or token request that has arrived.
    pub fn request_started(&mut self) {
        self.in_flight += 1;
        self.stats.max_in_flight = self.stats.max_in_flight.max(self.in_flight);
    }

    /// Counts a request as finished, with or without a response.
    pub fn request_finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn entries(&self) -> Vec<LogEntry> {
        self.entries.iter().cloned().collect()
    }

    pub fn clear_entries(&mut self) {
        self.entries.clear();
    }

    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    pub fn clear_stats(&mut self) {
        self.stats = Stats {
            max_in_flight: self.in_flight,
            ..Stats::default()
        };
    }

    /// Appends the request to the log and updates the counters.
    pub fn record(&mut self, observation: &Observation) {
        let violated = self.track_retry_after(observation);
        let mut counters = Counters::default();
        count(&mut counters, observation, violated);
        add(&mut self.stats.totals, &counters);
        if let Some(tenant) = &observation.facts.tenant {
            let per_tenant = self.stats.tenants.entry(tenant.clone()).or_default();
            add(per_tenant, &counters);
        }
        self.append(observation);
    }

    /// Returns whether the request arrived inside a pending Retry-After
    /// window, and opens a new window when the response is an error status
    /// with one: Graph sends Retry-After on 503 as well as on 429.
    fn track_retry_after(&mut self, observation: &Observation) -> bool {
        let (Some(endpoint), Some(tenant)) =
            (observation.facts.endpoint, observation.facts.tenant.clone())
        else {
            return false;
        };
        let key = (endpoint, tenant);
        let arrived_at = observation.context.arrived_at;
        let violated = self
            .retry_after_until
            .get(&key)
            .is_some_and(|until| arrived_at < *until);
        if observation
            .status
            .is_some_and(|status| status.is_client_error() || status.is_server_error())
            && let Some(seconds) = observation.retry_after
        {
            let until = Instant::now() + Duration::from_secs(seconds);
            let current = self.retry_after_until.entry(key).or_insert(until);
            *current = (*current).max(until);
        }
        violated
    }

    fn append(&mut self, observation: &Observation) {
        let facts = observation.facts;
        let entry = LogEntry {
            seq: self.next_seq,
            time: observation.context.arrived_at_wall.to_string(),
            method: observation.method.to_string(),
            path: observation.path.to_owned(),
            endpoint: match facts.endpoint {
                Some(Endpoint::Graph) => "graph",
                Some(Endpoint::Token) => "token",
                None => "other",
            },
            tenant: facts.tenant.clone(),
            client_id: facts.client_id.clone(),
            status: observation.status.map(|status| status.as_u16()),
            request_id: observation.context.request_id.clone(),
            client_request_id: observation.context.client_request_id.clone(),
            fault_injected: facts.fault_injected,
        };
        self.next_seq += 1;
        self.entries.push_back(entry);
        while self.entries.len() > self.limit {
            self.entries.pop_front();
        }
    }
}

/// Sets the counters that one request adds.
fn count(counters: &mut Counters, observation: &Observation, violated: bool) {
    let success = observation.status.is_some_and(|status| status.is_success());
    match observation.facts.endpoint {
        Some(Endpoint::Token) => {
            counters.token_requests = 1;
            counters.tokens_issued = u64::from(success);
        }
        Some(Endpoint::Graph) => match *observation.method {
            Method::GET => counters.gets = 1,
            Method::PATCH => counters.patches = 1,
            Method::DELETE => counters.deletes = 1,
            _ => {}
        },
        None => return,
    }
    counters.throttled = u64::from(observation.status == Some(StatusCode::TOO_MANY_REQUESTS));
    counters.retry_after_violations = u64::from(violated);
    counters.faults_injected = u64::from(observation.facts.fault_injected);
}

fn add(total: &mut Counters, counters: &Counters) {
    let Counters {
        token_requests,
        tokens_issued,
        gets,
        patches,
        deletes,
        throttled,
        retry_after_violations,
        faults_injected,
    } = counters;
    total.token_requests += token_requests;
    total.tokens_issued += tokens_issued;
    total.gets += gets;
    total.patches += patches;
    total.deletes += deletes;
    total.throttled += throttled;
    total.retry_after_violations += retry_after_violations;
    total.faults_injected += faults_injected;
}
