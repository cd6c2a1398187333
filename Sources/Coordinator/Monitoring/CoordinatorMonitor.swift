import DubfarmCore
import FarmMonitor
import FarmProtocol
import FarmStore
import Foundation
import MediaPipeline
import Monitoring
import Synchronization

extension ControlService {
    /// The `dubfarm jobs` view: newest first, with frames done (the dashboard and `top` use it too).
    func jobViews(state: JobState?, labels: [String: String] = [:], name: String? = nil, limit: Int) async throws -> [JobView] {
        let records = try await store.jobs(state: state, labels: labels, name: name, limit: min(max(limit, 1), 10_000))
        let frames = try await store.framesDone(jobs: records.map(\.id))
        let capabilities = await dispatcher.capabilities()
        // The personalisation phase of the jobs in it (few at a time: one query each).
        var personalisations: [JobID: PersonalisationView] = [:]
        for r in records where r.state == .personalising {
            if let p = try await store.personalisation(job: r.id) { personalisations[r.id] = Self.personalisationView(p) }
        }
        return records.map { r in
            var v = jobView(r)
            v.framesDone = r.state == .done ? (r.frameCount ?? 0) : frames[r.id] ?? 0
            v.waitingFor = Self.waitingFor(v, workers: capabilities)
            v.personalisation = personalisations[r.id]
            return v
        }
    }

    static func eventView(_ e: EventRecord) -> EventView {
        EventView(id: e.id, at: e.at, job: e.job?.rawValue, segment: e.segment, worker: e.worker, kind: e.kind.rawValue,
                  from: e.from, to: e.to, reason: e.reason ?? "")
    }

    /// What the dashboard shows: the views `dubfarm jobs`, `workers` and `logs` print.
    func snapshot(jobLimit: Int = 200, eventLimit: Int = 30) async throws -> FarmSnapshot {
        let jobs = try await jobViews(state: nil, limit: jobLimit)
        let workers = await dispatcher.workerViews()
        let events = try await store.recentEvents(limit: eventLimit).map(Self.eventView)
        return FarmSnapshot(at: Date(), jobs: jobs, workers: workers, events: events)
    }

    /// The dashboard's job page: the job, its segments and its whole history.
    func jobPage(_ job: Int64) async throws -> JobPage {
        let d = try await detail(job)
        let events = try await store.events(job: JobID(job), afterID: 0, limit: 10_000).map(Self.eventView)
        let hasThumbnail = d.job.state == .done && d.job.mediaRemovedAt == nil && media.isStoreFile(media.output(JobID(job)))
        return JobPage(detail: d, events: events, hasThumbnail: hasThumbnail)
    }

    /// A JPEG of the middle frame of a finished job's output, made once and kept beside it.
    func thumbnail(job: Int64) async throws -> [UInt8]? {
        guard let rec = try await store.job(JobID(job)), rec.state == .done, rec.mediaRemovedAt == nil else { return nil }
        let output = media.output(JobID(job)), cached = media.jobDir(JobID(job)).appendingPathComponent("thumbnail.jpg")
        guard media.isStoreFile(output) else { return nil }
        if media.isStoreFile(cached), let bytes = try? MediaStore.read(cached) { return bytes }
        let middle = (rec.frameCount ?? 2) / 2
        return try await runBlocking("thumbnail \(job)") {
            let jpeg = try Thumbnail.jpeg(path: output.path, frame: middle)
            try? MediaStore.writeAtomically(jpeg, to: cached)
            return jpeg
        }
    }

    /// Counts by state from the database, for the Prometheus gauges.
    func gauges() async throws -> FarmGauges {
        let c = try await store.stateCounts()
        return FarmGauges(jobs: c.jobs, segments: c.segments, workers: c.workers)
    }
}

/// The coordinator as the monitoring server's data source. Answers once the coordinator is
/// running (before that, and after it stops, it says so).
package final class CoordinatorMonitor: MonitoringSource, Sendable {
    private let controller = Mutex<ControlService?>(nil)

    init() {}

    func attach(_ c: ControlService?) {
        controller.withLock { $0 = c }
    }

    private func current() throws -> ControlService {
        guard let c = controller.withLock({ $0 }) else {
            throw DubfarmError(.unreachable, "the coordinator is not running (starting up or stopping)")
        }
        return c
    }

    package func snapshot() async throws -> FarmSnapshot { try await current().snapshot() }
    package func gauges() async throws -> FarmGauges { try await current().gauges() }
    package func jobPage(_ job: Int64) async throws -> JobPage { try await current().jobPage(job) }
    package func thumbnail(job: Int64) async throws -> [UInt8]? { try await current().thumbnail(job: job) }

    package func perform(_ action: JobAction, job: Int64, user: String) async throws -> JobView {
        let c = try current(), actor = "dashboard:\(user)"
        switch action {
        case .cancel: return try await c.cancel(job, actor: actor)
        case .retry: return try await c.retry(job, actor: actor)
        case .setPriority(let p): return try await c.setPriority(job, p, actor: actor)
        }
    }
}
