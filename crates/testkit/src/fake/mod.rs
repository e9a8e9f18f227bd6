//! A configurable, deliberately misbehaving MCP upstream for gateway tests
//! and benchmarks.
//!
//! Everything a gateway must survive from an upstream can be switched on from
//! [`FakeConfig`]: latency on every call, a JSON-RPC error every Nth call, a
//! process crash on the Nth call, a paginated `tools/list`, and tools that
//! fail, crash, stream progress, get cancelled, call back into the client
//! (sampling, elicitation, roots), or change the tool list at runtime.
//!
//! Layout: [`FakeUpstream`] (this module) is the `ServerHandler`; `tools`
//! holds the tool list and bodies, `fault` the per-call fault schedule,
//! `page` cursor pagination, `catalog` resources, prompts and completions.
//!
//! Counters (calls, cancellations) and runtime-added tools are per process,
//! shared by all sessions, because tests observe the process as a whole;
//! the log level and resource subscriptions are per session.

// Logging, sampling, roots and `resources/subscribe` are deprecated by rmcp
// for the 2026-07-28 revision; a legacy upstream still uses all of them.
#![allow(deprecated)]

mod catalog;
mod fault;
mod page;
mod tools;

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::error::lock;
use crate::level::LogThreshold;

/// How the fake upstream behaves; every knob defaults to "well behaved".
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// `serverInfo.name`, so a gateway test can tell upstreams apart.
    pub name: String,
    /// Number of extra echo tools `tool_0..tool_{N-1}`, for large catalogs.
    pub extra_tools: usize,
    /// Sleep before every tool call.
    pub latency: Duration,
    /// Every Nth tool call fails with a JSON-RPC internal error.
    pub fail_every: Option<u64>,
    /// The Nth tool call exits the process with code 1 before answering.
    pub crash_after_calls: Option<u64>,
    /// Page size for `tools/list`; `None` returns every tool at once.
    pub page_size: Option<usize>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            name: "fake".to_owned(),
            extra_tools: 0,
            latency: Duration::ZERO,
            fail_every: None,
            crash_after_calls: None,
            page_size: None,
        }
    }
}

/// The fake upstream server. Clone it with [`FakeUpstream::new_session`] per
/// session so sessions share counters but not log levels or subscriptions.
#[derive(Debug, Clone)]
pub struct FakeUpstream {
    shared: Arc<Shared>,
    session: Arc<SessionState>,
}

/// State of the whole process, visible to every session.
#[derive(Debug)]
struct Shared {
    config: FakeConfig,
    /// Tool calls received so far; drives `fail_every` and `crash_after_calls`.
    calls: AtomicU64,
    /// Calls that ended because the client cancelled them.
    cancelled: AtomicU64,
    /// Names registered at runtime through `add_tool`.
    added_tools: RwLock<Vec<String>>,
    /// Descriptions replaced at runtime by `redescribe` (a "rug pull").
    descriptions: RwLock<std::collections::HashMap<String, String>>,
}

/// State one client controls for its own session.
#[derive(Debug, Default)]
struct SessionState {
    log_threshold: LogThreshold,
    subscriptions: Mutex<HashSet<String>>,
}

impl FakeUpstream {
    /// Returns a fake upstream with fresh counters and one session's state.
    pub fn new(config: FakeConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                calls: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                added_tools: RwLock::new(Vec::new()),
                descriptions: RwLock::new(std::collections::HashMap::new()),
            }),
            session: Arc::default(),
        }
    }

    /// Returns a handler for another session of the same process.
    pub fn new_session(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            session: Arc::default(),
        }
    }

    /// Returns every tool currently offered, in list order.
    fn all_tools(&self) -> Result<Vec<Tool>, ErrorData> {
        let added = self
            .shared
            .added_tools
            .read()
            .map_err(|_| ErrorData::internal_error("server state lock poisoned", None))?;
        let descriptions = self
            .shared
            .descriptions
            .read()
            .map_err(|_| ErrorData::internal_error("server state lock poisoned", None))?;
        let mut list = tools::list(self.shared.config.extra_tools, &added);
        for tool in &mut list {
            if let Some(d) = descriptions.get(tool.name.as_ref()) {
                tool.description = Some(d.clone().into());
            }
        }
        Ok(list)
    }
}

impl ServerHandler for FakeUpstream {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities).with_server_info(Implementation::new(
            self.shared.config.name.clone(),
            env!("CARGO_PKG_VERSION"),
        ))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        let (tools, next) = page::slice(self.all_tools()?, cursor, self.shared.config.page_size)?;
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next;
        Ok(result)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.all_tools()
            .ok()?
            .into_iter()
            .find(|tool| tool.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        tools::call(self, request, cx).await.map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(catalog::resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            catalog::resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        catalog::read_resource(&request.uri).map(Into::into)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        lock(&self.session.subscriptions)?.insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        lock(&self.session.subscriptions)?.remove(&request.uri);
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(catalog::prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        catalog::get_prompt(&request).map(Into::into)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        catalog::complete(&request)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.session.log_threshold.set(request.level);
        Ok(())
    }
}
