import DubfarmCore
import FarmConfig
import FarmSecurity
import FarmProtocol
import FarmStore
import Foundation
import Logging
import Monitoring
import ServiceLifecycle

extension FarmConfiguration {
    /// Protocol limits derived from `limits.max_message_bytes`.
    package var limits: ProtocolLimits {
        var l = ProtocolLimits()
        l.maxPayloadBytes = Int(maxMessageBytes)
        l.maxMessageBytes = Int(maxMessageBytes)
        return l
    }
}

/// The coordinator: work endpoint for workers, control endpoint for the CLI, planning and
/// stitching, all state in PostgreSQL.
///
/// A `Service` (swift-service-lifecycle): run it in a `ServiceGroup`, which turns SIGTERM and
/// SIGINT into graceful shutdown — stop dispatching, give in-flight segments a moment to come
/// back, say goodbye to workers (they keep their segments and report to the next coordinator),
/// and return. Killed at any instant instead, a new coordinator resumes from the database and
/// the media store alone.
package final class CoordinatorService: Service, Sendable {
    package let config: FarmConfiguration
    let logger: Logger
    let work: RouterEndpoint
    let control: RouterEndpoint
    /// Seconds graceful shutdown waits for in-flight segments.
    let drainSeconds: Double
    /// The data source of the metrics and dashboard server (``monitoringServer()``).
    package let monitor = CoordinatorMonitor()
    /// Builds personalisation datasets (`submit --personalise`); without one such jobs fall
    /// back or fail.
    let datasetBuilder: PersonalisationDatasetBuilder?

    package init(config: FarmConfiguration, logger: Logger, drainSeconds: Double = 10, datasetBuilder: PersonalisationDatasetBuilder? = nil) {
        self.datasetBuilder = datasetBuilder
        self.config = config
        self.logger = logger
        self.drainSeconds = drainSeconds
        work = RouterEndpoint(name: "work", logger: logger)
        // Bounded: a client flooding the control endpoint is answered "busy" instead of queued.
        control = RouterEndpoint(name: "control", logger: logger, maxQueued: Self.controlQueueLimit)
    }

    /// The endpoints actually bound (real ports), once `run()` has started them.
    package var boundEndpoints: (work: String, control: String) { (work.boundEndpoint, control.boundEndpoint) }

    /// Control requests waiting to be handled beyond which new ones are answered "busy".
    static let controlQueueLimit = 1024

    package func run() async throws {
        let name = "coordinator@\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
        let media = try MediaStore(root: config.mediaStore)
        // One connection (and thread) each for dispatch, control queries and planning/stitching.
        let reconnect = config.databaseReconnectSeconds
        let dispatchStore = FarmStore(url: config.databaseURL, actor: name, asyncSegmentCommits: config.asyncSegmentCommits,
                                      reconnectSeconds: reconnect, logger: logger)
        // Control queries answer a waiting client: they wait for the database less than its timeout.
        let controlStore = FarmStore(url: config.databaseURL, actor: name, reconnectSeconds: min(reconnect, 5), logger: logger)
        let jobStore = FarmStore(url: config.databaseURL, actor: name, reconnectSeconds: reconnect, logger: logger)
        for s in [dispatchStore, controlStore, jobStore] { try await s.connect(retryFor: 30) }
        try await dispatchStore.checkSchema()

        let pipelineBox = PipelineBox()
        let dispatcher = Dispatcher(config: config, store: dispatchStore, media: media, endpoint: work, name: name, logger: logger) { job in
            Task { await pipelineBox.pipeline?.stitchWhenReady(job) }
        }
        let pipeline = JobPipeline(config: config, store: jobStore, media: media, name: name, logger: logger,
                                   datasetBuilder: datasetBuilder) { _ in
            Task { await dispatcher.dispatchAll() }
        }
        pipelineBox.pipeline = pipeline
        let controller = ControlService(config: config, store: controlStore, media: media, dispatcher: dispatcher,
                                        pipeline: pipeline, endpoint: control, name: name, logger: logger)
        monitor.attach(controller)
        defer { monitor.attach(nil) }

        // CURVE (security.*): the ZAP handler runs before the endpoints bind, so no peer is ever
        // admitted unchecked.
        let security = try CurveSecurity.start(config: config, logger: logger)
        defer { security?.stop() }
        var workOptions = RouterEndpoint.Options(maxMessageBytes: config.maxMessageBytes)
        var controlOptions = RouterEndpoint.Options(maxMessageBytes: config.maxMessageBytes, maxQueued: Self.controlQueueLimit,
                                                    overflowReply: ControlService.busyReply)
        security?.apply(to: &workOptions, domain: AccessPolicy.workDomain)
        security?.apply(to: &controlOptions, domain: AccessPolicy.controlDomain)
        try work.start(endpoint: config.workEndpoint, options: workOptions)
        try control.start(endpoint: config.controlEndpoint, options: controlOptions)
        logger.info("coordinator ready", metadata: ["work": .string(work.boundEndpoint), "control": .string(control.boundEndpoint),
                                                    "database": .string(config.redactedDatabaseURL), "store": .string(media.root.path),
                                                    "curve": .string(security == nil ? "off" : "on")])

        let work = self.work, control = self.control, logger = self.logger, drainSeconds = self.drainSeconds
        let heartbeat = config.heartbeatInterval, retentionHours = config.retentionHours
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await dispatcher.serve(work.inbound) }
                group.addTask { for await m in control.inbound { await controller.receive(m) } }
                group.addTask { await pipeline.run() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(Int(max(50, heartbeat * 1000 / 4))))
                        await dispatcher.tick()
                    }
                }
                if retentionHours > 0 {
                    // media.retention_hours: gc on its own, a few times per retention period
                    // (at most hourly). Loops until cancelled (the group's first finished task
                    // ends the coordinator).
                    group.addTask {
                        let period = min(3600, retentionHours * 3600 / 4)
                        while !Task.isCancelled {
                            try? await Task.sleep(for: .seconds(period))
                            if Task.isCancelled { break }
                            do { _ = try await controller.collectGarbage(olderThan: retentionHours * 3600, dryRun: false) } catch {
                                logger.error("gc (media.retention_hours) failed: \(error)")
                            }
                        }
                    }
                }
                // Shutdown: wait for the endpoints to close, then stop the rest.
                await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            Task {
                logger.notice("shutting down: no new segments will be handed out")
                let clock = ContinuousClock()
                let deadline = clock.now + .milliseconds(Int(drainSeconds * 1000))
                while await dispatcher.drain() > 0, clock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(100))
                }
                await dispatcher.goodbye()
                try? await Task.sleep(for: .milliseconds(100))
                work.stop()
                control.stop()
            }
        }
        for s in [dispatchStore, controlStore, jobStore] { await s.close() }
        logger.notice("coordinator stopped")
    }
}

extension CoordinatorService {
    /// The metrics and dashboard HTTP server for `metrics.listen` (nil when it is empty), to run
    /// next to this service in the same `ServiceGroup`.
    package func monitoringServer() throws -> MonitoringServer? {
        guard let listen = try FarmConfiguration.parseListen(config.metricsListen) else { return nil }
        let users = try config.dashboardUsersFile.map(DashboardAuth.loadUsers(path:)) ?? [:]
        if config.dashboardUsersFile != nil && users.isEmpty {
            logger.warning("dashboard.users_file \(config.dashboardUsersFile!) lists nobody: nobody can act from the dashboard")
        }
        return MonitoringServer(host: listen.host, port: listen.port, source: monitor, metrics: .shared, logger: logger, users: users)
    }
}

/// Breaks the dispatcher ↔ pipeline reference cycle at construction.
final class PipelineBox: @unchecked Sendable {
    var pipeline: JobPipeline?
}
