import DubfarmCore
import FarmMonitor
import FarmProtocol
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// Where the monitoring server gets its numbers: the coordinator, which answers from the same
/// read models as `dubfarm status`, `jobs` and `workers`, and from the database.
package protocol MonitoringSource: Sendable {
    /// Jobs, workers and recent events (rates are added by the server).
    func snapshot() async throws -> FarmSnapshot
    /// Jobs, segments and workers counted by state in the database.
    func gauges() async throws -> FarmGauges
    /// One job with its segments and events (the dashboard's job page).
    func jobPage(_ job: Int64) async throws -> JobPage
    /// Cancels, retries or re-prioritises a job for dashboard user `user` (named in its events).
    func perform(_ action: JobAction, job: Int64, user: String) async throws -> JobView
    /// A JPEG of a finished job's middle frame; nil when it has no output.
    func thumbnail(job: Int64) async throws -> [UInt8]?
}

/// The coordinator's HTTP side (Hummingbird): Prometheus metrics at `/metrics`, the dashboard
/// at `/` and a page per job at `/jobs/ID`, their data at `/api/farm` and `/api/jobs/ID`, live
/// updates pushed as server-sent events at `/api/stream` (one query loop for every viewer,
/// ``SnapshotHub``), and the actions (`POST /api/jobs/ID/cancel|retry|priority`) for users who
/// logged in at `/login` (``DashboardAuth``). A `Service` run next to the coordinator in the same
/// `ServiceGroup`. A port that cannot be bound is logged and the coordinator runs on.
package struct MonitoringServer: Service {
    package let host: String
    package let port: Int
    let source: any MonitoringSource
    let metrics: FarmMetrics
    let logger: Logger
    let hub: SnapshotHub
    let auth: DashboardAuth

    package init(host: String, port: Int, source: any MonitoringSource, metrics: FarmMetrics, logger: Logger,
                 users: [String: String] = [:], pushInterval: Duration = .milliseconds(500)) {
        self.host = host
        self.port = port
        self.source = source
        self.metrics = metrics
        self.logger = logger
        hub = SnapshotHub(source: source, interval: pushInterval)
        auth = DashboardAuth(users: users)
    }

    /// The routes, separate from `run()` so they can be driven without a socket.
    package func router() -> Router<BasicRequestContext> {
        let router = Router()
        let source = self.source, metrics = self.metrics, hub = self.hub, auth = self.auth, logger = self.logger
        router.get("/metrics") { _, _ -> Response in
            do {
                metrics.update(try await source.gauges())
            } catch {
                logger.warning("metrics: could not read the state counts from the database: \(error)")
                return Self.text("# the coordinator could not read its database: \(error)\n", status: .serviceUnavailable)
            }
            return Self.text(metrics.exposition(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        }
        router.get("/api/farm") { _, _ -> Response in
            do { return Self.json(try await hub.current()) } catch { return Self.failure(error) }
        }
        router.get("/api/stream") { _, _ -> Response in
            Self.eventStream(hub)
        }
        router.get("/api/jobs/:id") { _, context -> Response in
            do { return Self.json(try await source.jobPage(try context.parameters.require("id", as: Int64.self))) } catch { return Self.failure(error) }
        }
        router.get("/api/jobs/:id/thumbnail") { _, context -> Response in
            do {
                guard let jpeg = try await source.thumbnail(job: try context.parameters.require("id", as: Int64.self)) else {
                    return Self.text("no finished output\n", status: .notFound)
                }
                var r = Response(status: .ok, body: .init(byteBuffer: ByteBuffer(bytes: jpeg)))
                r.headers[.contentType] = "image/jpeg"
                r.headers[.cacheControl] = "no-store"
                return r
            } catch { return Self.failure(error) }
        }
        router.get("/api/session") { request, _ -> Response in
            let user = await Self.user(request, auth)
            return Self.json(SessionView(user: user, canLogIn: auth.hasUsers))
        }
        router.post("/api/jobs/:id/:action") { request, context -> Response in
            var request = request
            guard let user = await Self.user(request, auth) else {
                return Self.error(auth.hasUsers ? "log in to act on jobs (/login)" : "nobody can act from the dashboard: set dashboard.users_file in the coordinator's configuration",
                                  status: auth.hasUsers ? .unauthorized : .forbidden)
            }
            // JSON only: a form on another site cannot post it without the browser asking first.
            guard request.headers[.contentType]?.hasPrefix("application/json") == true else {
                return Self.error("send the action as application/json", status: .unsupportedMediaType)
            }
            do {
                let job = try context.parameters.require("id", as: Int64.self)
                let action: JobAction
                switch context.parameters.get("action") ?? "" {
                case "cancel": action = .cancel
                case "retry": action = .retry
                case "priority":
                    let body = try await request.collectBody(upTo: 4096)
                    guard let p = try? JSONDecoder().decode(PriorityBody.self, from: Data(buffer: body)) else {
                        return Self.error("priority: send {\"priority\": N}", status: .badRequest)
                    }
                    action = .setPriority(p.priority)
                default: return Self.error("unknown action", status: .notFound)
                }
                let view = try await source.perform(action, job: job, user: user)
                await hub.nudge()
                logger.info("dashboard action", metadata: ["job": .stringConvertible(job), "user": .string(user), "action": .string("\(action)")])
                return Self.json(view)
            } catch { return Self.failure(error) }
        }
        router.get("/login") { _, _ -> Response in Self.text(Dashboard.loginHTML, contentType: "text/html; charset=utf-8") }
        router.post("/login") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: 16 << 10)
            let form = Self.formFields(String(buffer: body))
            let next = Self.safeNext(form["next"])
            guard let user = form["user"], let password = form["password"], let token = await auth.login(user: user, password: password) else {
                logger.notice("dashboard: a login failed", metadata: ["user": .string(String((form["user"] ?? "").prefix(64)))])
                var r = Response(status: .seeOther)
                r.headers[.location] = "/login?failed=1&next=" + (next.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "/")
                return r
            }
            var r = Response(status: .seeOther)
            r.headers[.location] = next
            r.setCookie(Cookie(name: DashboardAuth.cookieName, value: token, maxAge: 12 * 3600, path: "/", secure: false, httpOnly: true, sameSite: .strict))
            return r
        }
        router.post("/logout") { request, _ -> Response in
            if let token = request.cookies[DashboardAuth.cookieName]?.value { await auth.logout(token: token) }
            var r = Response(status: .seeOther)
            r.headers[.location] = "/"
            r.setCookie(Cookie(name: DashboardAuth.cookieName, value: "", maxAge: 0, path: "/", secure: false, httpOnly: true, sameSite: .strict))
            return r
        }
        router.get("/") { _, _ -> Response in
            Self.text(Dashboard.html, contentType: "text/html; charset=utf-8")
        }
        router.get("/jobs/:id") { _, _ -> Response in
            Self.text(Dashboard.jobHTML, contentType: "text/html; charset=utf-8")
        }
        router.get("/healthz") { _, _ -> Response in Self.text("ok\n") }
        return router
    }

    struct PriorityBody: Decodable { var priority: Int }
    struct SessionView: Encodable { var user: String?; var canLogIn: Bool }

    /// The logged-in user: a session cookie, or HTTP Basic.
    static func user(_ request: Request, _ auth: DashboardAuth) async -> String? {
        if let token = request.cookies[DashboardAuth.cookieName]?.value, !token.isEmpty, let user = await auth.user(session: token) { return user }
        if let header = request.headers[.authorization] { return await auth.user(basic: header) }
        return nil
    }

    /// A local path to go to after logging in (never another site).
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/"), !next.hasPrefix("//"), !next.contains("\\") else { return "/" }
        return next
    }

    /// `application/x-www-form-urlencoded` fields.
    static func formFields(_ body: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            if kv.count == 2 { out[kv[0]] = kv[1] } else if kv.count == 1 { out[kv[0]] = "" }
        }
        return out
    }

    /// `/api/stream`: the hub's snapshots as server-sent events (`event: farm`, the snapshot's
    /// JSON; `event: problem`, a message, when the coordinator could not read its database).
    static func eventStream(_ hub: SnapshotHub) -> Response {
        var r = Response(status: .ok, body: ResponseBody { writer in
            let (id, stream) = await hub.subscribe()
            do {
                try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
                for await result in stream {
                    switch result {
                    case .success(let snapshot):
                        try await writer.write(ByteBuffer(string: "event: farm\ndata: " + Self.jsonText(snapshot) + "\n\n"))
                    case .failure(let error):
                        let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
                        try await writer.write(ByteBuffer(string: "event: problem\ndata: " + Self.quoted(e.message) + "\n\n"))
                    }
                }
            } catch {
                // The viewer went away.
            }
            await hub.unsubscribe(id)
            try? await writer.finish(nil)
        })
        r.headers[.contentType] = "text/event-stream"
        r.headers[.cacheControl] = "no-store"
        return r
    }

    package func run() async throws {
        let logger = self.logger
        let host = self.host, port = self.port
        let app = Application(router: router(), configuration: .init(address: .hostname(host, port: port), serverName: "dubfarm"),
                              onServerRunning: { _ in
                                  logger.info("monitoring: metrics at http://\(host):\(port)/metrics, dashboard at http://\(host):\(port)/")
                              }, logger: logger)
        do {
            try await app.run()
        } catch {
            logger.error("monitoring: cannot serve on \(host):\(port) (metrics.listen): \(error); the coordinator runs on without metrics")
            try? await gracefulShutdown()
        }
    }

    // MARK: Responses

    static func text(_ s: String, status: HTTPResponse.Status = .ok, contentType: String = "text/plain; charset=utf-8") -> Response {
        var r = Response(status: status, body: .init(byteBuffer: ByteBuffer(string: s)))
        r.headers[.contentType] = contentType
        r.headers[.cacheControl] = "no-store"
        return r
    }

    static func jsonText<T: Encodable>(_ value: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .iso8601
        return String(decoding: (try? e.encode(value)) ?? Data("{}".utf8), as: UTF8.self)
    }

    static func json<T: Encodable>(_ value: T) -> Response {
        text(jsonText(value), contentType: "application/json")
    }

    static func error(_ message: String, status: HTTPResponse.Status) -> Response {
        text("{\"error\":\(quoted(message))}", status: status, contentType: "application/json")
    }

    /// A coordinator error as JSON with the status it deserves.
    static func failure(_ error: any Error) -> Response {
        if error is any HTTPResponseError { return self.error("\(error)", status: .badRequest) }
        let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
        let status: HTTPResponse.Status
        switch e.code {
        case .notFound: status = .notFound
        case .badInput: status = .badRequest
        case .unreachable, .database, .timeout: status = .serviceUnavailable
        default: status = .internalServerError
        }
        return self.error(e.message, status: status)
    }

    static func quoted(_ s: String) -> String {
        String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}
