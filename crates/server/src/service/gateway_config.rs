//! Gateway configuration: services and routes one by one, or a whole desired state
//! applied by name. Every change reaches the routing table before the call answers.

use super::{
    finish_page, page, parse_permissions, Caller, Granted, Service, ServiceError, ServiceResult,
};
use crate::api::*;
use std::collections::HashMap;
use tessera_core::audit::{AuditAction, AuditDraft, Target};
use tessera_core::gateway::{self, Route, RouteAuth, UpstreamService, DEFAULT_TIMEOUT_MS};
use tessera_core::ids::{RouteId, ServiceId};
use tessera_core::permission::need::{GatewayRead, GatewayWrite};
use tessera_core::policy::FieldError;
use tessera_core::store::{GatewayChange, GatewayStore};
use tessera_core::token::RateLimit;

fn service_view(s: &UpstreamService) -> ServiceView {
    ServiceView {
        id: s.id.clone(),
        name: s.name.clone(),
        upstreams: s.upstreams.clone(),
        timeout_ms: s.timeout_ms,
        created_at: s.created_at,
    }
}

fn route_view(r: &Route) -> RouteView {
    RouteView {
        id: r.id.clone(),
        name: r.name.clone(),
        service_id: r.service_id.clone(),
        path_prefix: r.path_prefix.clone(),
        methods: r.methods.clone(),
        auth: match r.auth {
            RouteAuth::Token => "token",
            RouteAuth::None => "none",
        }
        .into(),
        scopes: r.scopes.iter().map(|p| p.to_string()).collect(),
        rate_limit: r.rate_limit.map(Into::into),
        strip_prefix: r.strip_prefix,
        created_at: r.created_at,
    }
}

/// The validated fields of a service body.
fn service_fields(body: &ServiceBody) -> ServiceResult<(String, Vec<String>, u32)> {
    let mut errors = Vec::new();
    if let Err(e) = gateway::validate_name("name", &body.name) {
        errors.push(e);
    }
    let upstreams = gateway::validate_upstreams(&body.upstreams)
        .map_err(|e| errors.push(e))
        .ok();
    let timeout = body.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if let Err(e) = gateway::validate_timeout(timeout) {
        errors.push(e);
    }
    match upstreams {
        Some(u) if errors.is_empty() => Ok((body.name.clone(), u, timeout)),
        _ => Err(ServiceError::Validation(errors)),
    }
}

/// The route a body describes (its id and creation time to be filled in).
#[allow(clippy::too_many_arguments)]
fn route_fields(
    name: &str,
    service_id: String,
    path_prefix: &str,
    methods: &Option<Vec<String>>,
    auth: &Option<String>,
    scopes: &Option<Vec<String>>,
    rate_limit: Option<RateLimitBody>,
    strip_prefix: Option<bool>,
) -> ServiceResult<Route> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut keep = |r: Result<(), FieldError>| r.map_err(|e| errors.push(e)).is_ok();
    keep(gateway::validate_name("name", name));
    let prefix = gateway::validate_prefix(path_prefix)
        .map_err(|e| errors.push(e))
        .ok();
    let methods = match methods {
        Some(m) => gateway::validate_methods(m)
            .map_err(|e| errors.push(e))
            .ok(),
        None => None,
    };
    let auth = match auth.as_deref() {
        None | Some("token") => RouteAuth::Token,
        Some("none") => RouteAuth::None,
        Some(_) => {
            errors.push(FieldError::new("auth", "must be token or none"));
            RouteAuth::Token
        }
    };
    let limit = rate_limit.map(RateLimit::from);
    if let Some(l) = limit {
        if let Err(m) = l.validate() {
            errors.push(FieldError::new("rate_limit", m));
        }
    }
    if !errors.is_empty() {
        return Err(ServiceError::Validation(errors));
    }
    let scopes = parse_permissions("scopes", scopes.as_deref().unwrap_or_default())?;
    Ok(Route {
        id: String::new(),
        name: name.to_owned(),
        service_id,
        path_prefix: prefix.unwrap_or_default(),
        methods,
        auth,
        scopes,
        rate_limit: limit,
        strip_prefix: strip_prefix.unwrap_or(false),
        created_at: chrono::DateTime::default(),
    })
}

/// One newest-first page of a list held in memory (gateway configuration is small).
fn page_of<T, V>(
    all: Vec<T>,
    q: PageQuery,
    id_of: impl Fn(&T) -> &str,
    view: impl Fn(&T) -> V,
) -> ServiceResult<Paged<V>>
where
    V: utoipa::ToSchema,
{
    let (limit, page) = page(q.limit, q.cursor)?;
    let items: Vec<T> = all
        .into_iter()
        .filter(|t| page.after.as_deref().is_none_or(|a| id_of(t) < a))
        .take(page.limit as usize)
        .collect();
    let (items, next_cursor) = finish_page(items, limit, |t| id_of(t).to_owned());
    Ok(Paged {
        items: items.iter().map(view).collect(),
        next_cursor,
    })
}

impl Service {
    /// A route as `body` describes it, naming a service that exists.
    async fn route_from_body(&self, body: &RouteBody) -> ServiceResult<Route> {
        let r = route_fields(
            &body.name,
            body.service_id.clone(),
            &body.path_prefix,
            &body.methods,
            &body.auth,
            &body.scopes,
            body.rate_limit,
            body.strip_prefix,
        )?;
        self.find_service(&r.service_id)
            .await
            .map_err(|_| ServiceError::field("service_id", "no such service"))?;
        Ok(r)
    }

    async fn save_and_reload(
        &self,
        change: GatewayChange,
        audits: Vec<AuditDraft>,
    ) -> ServiceResult<()> {
        self.store
            .save_gateway(&change, audits)
            .await?
            .apply(&self.caches)
            .await?;
        Ok(())
    }

    fn service_audit(
        &self,
        caller: &Caller,
        action: AuditAction,
        s: &UpstreamService,
    ) -> AuditDraft {
        self.draft(
            caller,
            action,
            Some(Target::new("service", &s.id, Some(&s.name))),
            serde_json::json!({"upstreams": s.upstreams, "timeout_ms": s.timeout_ms}),
        )
    }

    fn route_audit(&self, caller: &Caller, action: AuditAction, r: &Route) -> AuditDraft {
        self.draft(
            caller,
            action,
            Some(Target::new("route", &r.id, Some(&r.name))),
            serde_json::json!(route_view(r)),
        )
    }

    async fn find_service(&self, id: &str) -> ServiceResult<UpstreamService> {
        self.store
            .list_services()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(ServiceError::NotFound("service"))
    }

    async fn find_route(&self, id: &str) -> ServiceResult<Route> {
        self.store
            .list_routes()
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or(ServiceError::NotFound("route"))
    }

    pub async fn create_service(
        &self,
        caller: &Granted<GatewayWrite>,
        body: ServiceBody,
    ) -> ServiceResult<ServiceView> {
        let (name, upstreams, timeout_ms) = service_fields(&body)?;
        let now = self.clock.now();
        let s = UpstreamService {
            id: ServiceId::generate(now).to_string(),
            name,
            upstreams,
            timeout_ms,
            created_at: now,
        };
        let audit = self.service_audit(caller, AuditAction::ServiceCreate, &s);
        self.save_and_reload(GatewayChange::upsert_service(s.clone()), vec![audit])
            .await?;
        Ok(service_view(&s))
    }

    pub async fn list_services(
        &self,
        _: &Granted<GatewayRead>,
        q: PageQuery,
    ) -> ServiceResult<Paged<ServiceView>> {
        page_of(
            self.store.list_services().await?,
            q,
            |s| &s.id,
            service_view,
        )
    }

    pub async fn get_service(
        &self,
        _: &Granted<GatewayRead>,
        id: &str,
    ) -> ServiceResult<ServiceView> {
        Ok(service_view(&self.find_service(id).await?))
    }

    pub async fn put_service(
        &self,
        caller: &Granted<GatewayWrite>,
        id: &str,
        body: ServiceBody,
    ) -> ServiceResult<ServiceView> {
        let mut s = self.find_service(id).await?;
        (s.name, s.upstreams, s.timeout_ms) = service_fields(&body)?;
        let audit = self.service_audit(caller, AuditAction::ServiceUpdate, &s);
        self.save_and_reload(GatewayChange::upsert_service(s.clone()), vec![audit])
            .await?;
        Ok(service_view(&s))
    }

    pub async fn delete_service(
        &self,
        caller: &Granted<GatewayWrite>,
        id: &str,
    ) -> ServiceResult<()> {
        let s = self.find_service(id).await?;
        let audit = self.service_audit(caller, AuditAction::ServiceDelete, &s);
        self.save_and_reload(GatewayChange::delete_service(s.id), vec![audit])
            .await
    }

    pub async fn create_route(
        &self,
        caller: &Granted<GatewayWrite>,
        body: RouteBody,
    ) -> ServiceResult<RouteView> {
        let mut r = self.route_from_body(&body).await?;
        let now = self.clock.now();
        r.id = RouteId::generate(now).to_string();
        r.created_at = now;
        let audit = self.route_audit(caller, AuditAction::RouteCreate, &r);
        self.save_and_reload(GatewayChange::upsert_route(r.clone()), vec![audit])
            .await?;
        Ok(route_view(&r))
    }

    pub async fn list_routes(
        &self,
        _: &Granted<GatewayRead>,
        q: PageQuery,
    ) -> ServiceResult<Paged<RouteView>> {
        page_of(self.store.list_routes().await?, q, |r| &r.id, route_view)
    }

    pub async fn get_route(&self, _: &Granted<GatewayRead>, id: &str) -> ServiceResult<RouteView> {
        Ok(route_view(&self.find_route(id).await?))
    }

    pub async fn put_route(
        &self,
        caller: &Granted<GatewayWrite>,
        id: &str,
        body: RouteBody,
    ) -> ServiceResult<RouteView> {
        let before = self.find_route(id).await?;
        let mut r = self.route_from_body(&body).await?;
        r.id = before.id;
        r.created_at = before.created_at;
        let audit = self.route_audit(caller, AuditAction::RouteUpdate, &r);
        self.save_and_reload(GatewayChange::upsert_route(r.clone()), vec![audit])
            .await?;
        Ok(route_view(&r))
    }

    pub async fn delete_route(
        &self,
        caller: &Granted<GatewayWrite>,
        id: &str,
    ) -> ServiceResult<()> {
        let r = self.find_route(id).await?;
        let audit = self.route_audit(caller, AuditAction::RouteDelete, &r);
        self.save_and_reload(GatewayChange::delete_route(r.id), vec![audit])
            .await
    }

    /// Makes the gateway's configuration `desired`, matching by name; all or nothing.
    pub async fn apply_gateway_config(
        &self,
        caller: &Granted<GatewayWrite>,
        desired: GatewayConfig,
        dry_run: bool,
    ) -> ServiceResult<GatewayDiff> {
        let now = self.clock.now();
        let current_services = self.store.list_services().await?;
        let current_routes = self.store.list_routes().await?;
        let mut diff = GatewayDiff::default();
        let mut change = GatewayChange::default();
        let mut audits = Vec::new();

        let mut seen = std::collections::HashSet::new();
        let mut service_ids: HashMap<String, String> = HashMap::new();
        for body in &desired.services {
            if !seen.insert(body.name.clone()) {
                return Err(ServiceError::field(
                    "services",
                    format!("the service name '{}' appears twice", body.name),
                ));
            }
            let (name, upstreams, timeout_ms) = service_fields(body)?;
            match current_services.iter().find(|s| s.name == name) {
                Some(existing) => {
                    service_ids.insert(name.clone(), existing.id.clone());
                    if existing.upstreams != upstreams || existing.timeout_ms != timeout_ms {
                        let s = UpstreamService {
                            upstreams,
                            timeout_ms,
                            ..existing.clone()
                        };
                        audits.push(self.service_audit(caller, AuditAction::ServiceUpdate, &s));
                        diff.services.update.push(name);
                        change.upsert_services.push(s);
                    }
                }
                None => {
                    let s = UpstreamService {
                        id: ServiceId::generate(now).to_string(),
                        name: name.clone(),
                        upstreams,
                        timeout_ms,
                        created_at: now,
                    };
                    service_ids.insert(name.clone(), s.id.clone());
                    audits.push(self.service_audit(caller, AuditAction::ServiceCreate, &s));
                    diff.services.create.push(name);
                    change.upsert_services.push(s);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for body in &desired.routes {
            if !seen.insert(body.name.clone()) {
                return Err(ServiceError::field(
                    "routes",
                    format!("the route name '{}' appears twice", body.name),
                ));
            }
            let service_id = service_ids.get(&body.service).cloned().ok_or_else(|| {
                ServiceError::field("routes", format!("route '{}' names the service '{}', which the configuration does not define", body.name, body.service))
            })?;
            let mut r = route_fields(
                &body.name,
                service_id,
                &body.path_prefix,
                &body.methods,
                &body.auth,
                &body.scopes,
                body.rate_limit,
                body.strip_prefix,
            )?;
            match current_routes.iter().find(|c| c.name == r.name) {
                Some(existing) => {
                    r.id = existing.id.clone();
                    r.created_at = existing.created_at;
                    if *existing != r {
                        audits.push(self.route_audit(caller, AuditAction::RouteUpdate, &r));
                        diff.routes.update.push(r.name.clone());
                        change.upsert_routes.push(r);
                    }
                }
                None => {
                    r.id = RouteId::generate(now).to_string();
                    r.created_at = now;
                    audits.push(self.route_audit(caller, AuditAction::RouteCreate, &r));
                    diff.routes.create.push(r.name.clone());
                    change.upsert_routes.push(r);
                }
            }
        }
        for r in current_routes.iter().filter(|r| !seen.contains(&r.name)) {
            audits.push(self.route_audit(caller, AuditAction::RouteDelete, r));
            diff.routes.delete.push(r.name.clone());
            change.delete_routes.push(r.id.clone());
        }
        for s in current_services
            .iter()
            .filter(|s| !service_ids.contains_key(&s.name))
        {
            audits.push(self.service_audit(caller, AuditAction::ServiceDelete, s));
            diff.services.delete.push(s.name.clone());
            change.delete_services.push(s.id.clone());
        }
        if !dry_run && !audits.is_empty() {
            self.save_and_reload(change, audits).await?;
        }
        Ok(diff)
    }
}
