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
}

/// The coordinator's HTTP side (Hummingbird): Prometheus metrics at `/metrics`, the read-only
/// dashboard at `/`, and its data at `/api/farm`. A `Service` run next to the coordinator in the
/// same `ServiceGroup`. A port that cannot be bound is logged and the coordinator runs on.
package struct MonitoringServer: Service {
    package let host: String
    package let port: Int
    let source: any MonitoringSource
    let metrics: FarmMetrics
    let logger: Logger
    let rates = RateBox()

    package init(host: String, port: Int, source: any MonitoringSource, metrics: FarmMetrics, logger: Logger) {
        self.host = host
        self.port = port
        self.source = source
        self.metrics = metrics
        self.logger = logger
    }

    /// The routes, separate from `run()` so they can be driven without a socket.
    package func router() -> Router<BasicRequestContext> {
        let router = Router()
        let source = self.source, metrics = self.metrics, rates = self.rates, logger = self.logger
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
            do {
                let snap = await rates.observe(try await source.snapshot())
                return Self.json(snap)
            } catch {
                let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
                return Self.text("{\"error\":\(Self.quoted(e.message))}", status: .serviceUnavailable, contentType: "application/json")
            }
        }
        router.get("/") { _, _ -> Response in
            Self.text(Dashboard.html, contentType: "text/html; charset=utf-8")
        }
        router.get("/healthz") { _, _ -> Response in Self.text("ok\n") }
        return router
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

    static func json<T: Encodable>(_ value: T) -> Response {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.dateEncodingStrategy = .iso8601
        let data = (try? e.encode(value)) ?? Data("{}".utf8)
        return text(String(decoding: data, as: UTF8.self), contentType: "application/json")
    }

    static func quoted(_ s: String) -> String {
        String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}

/// Rates across dashboard requests (the same ``RateTracker`` `top` uses).
actor RateBox {
    var tracker = RateTracker()
    func observe(_ s: FarmSnapshot) -> FarmSnapshot { tracker.observe(s) }
}
