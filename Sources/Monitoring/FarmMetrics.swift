import DubfarmCore
import Foundation
import Prometheus
import Synchronization

/// Counts of jobs, segments and workers by state, read from the database at scrape time so the
/// gauges always match it.
package struct FarmGauges: Sendable, Hashable {
    package var jobs: [String: Int]
    package var segments: [String: Int]
    package var workers: [String: Int]

    package init(jobs: [String: Int] = [:], segments: [String: Int] = [:], workers: [String: Int] = [:]) {
        self.jobs = jobs
        self.segments = segments
        self.workers = workers
    }

    /// Segments waiting for a worker (`pending`): the queue depth.
    package var queueDepth: Int { segments["pending"] ?? 0 }
}

/// The coordinator's Prometheus metrics (swift-prometheus). Counters and histograms are fed by
/// one-line hooks where things happen (dispatch, uploads, stitching); gauges by state are set from
/// the database just before each scrape (``update(_:)``). Thread-safe.
///
/// Like swift-metrics' global `MetricsSystem`, the coordinator process has one instance,
/// ``shared``, so a hook is a single call wherever the event happens (no plumbing through
/// initializers of the dispatcher, the control service and the job pipeline).
package final class FarmMetrics: Sendable {
    /// The coordinator process's metrics.
    package static let shared = FarmMetrics()

    /// The registry `/metrics` emits.
    package let registry = PrometheusCollectorRegistry()

    /// Worker states the gauges always report (zero included), besides any others found.
    static let workerStates = ["idle", "busy", "draining", "gone", "lost"]

    let segmentSeconds: ValueHistogram
    let dispatchLatency: ValueHistogram
    let framesProcessed: Counter
    let segmentsCompleted: Counter
    let uploadBytes: Counter
    let uploadReusedBytes: Counter
    let stitchBytes: Counter
    let jobsStitched: Counter
    /// When each worker's last result arrived, until its next task is sent.
    let resultArrivals = Mutex<[String: ContinuousClock.Instant]>([:])

    package init() {
        segmentSeconds = registry.makeValueHistogram(
            descriptor: .init(namespace: "dubfarm", metricName: "segment_processing", unitName: "seconds",
                              helpText: "Seconds a worker took to process one segment (decode, stage, encode), per accepted result"),
            buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600])
        dispatchLatency = registry.makeValueHistogram(
            descriptor: .init(namespace: "dubfarm", metricName: "dispatch_latency", unitName: "seconds",
                              helpText: "Seconds from a worker's result arriving to its next task being sent"),
            buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5])
        framesProcessed = registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "frames_processed", unitName: "total",
                                                                 helpText: "Frames in accepted segment results"), labels: [])
        segmentsCompleted = registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "segments_completed", unitName: "total",
                                                                   helpText: "Segment results accepted"), labels: [])
        uploadBytes = registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "upload", unitName: "bytes_total",
                                                             helpText: "Bytes received in uploads from clients"), labels: [])
        uploadReusedBytes = registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "upload_reused", unitName: "bytes_total",
                                                                   helpText: "Bytes clients did not have to send: the farm held the file already (content-addressed uploads)"), labels: [])
        stitchBytes = registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "stitch_output", unitName: "bytes_total",
                                                             helpText: "Bytes of stitched outputs written"), labels: [])
        jobsStitched = registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "jobs_stitched", unitName: "total",
                                                              helpText: "Jobs stitched into their output"), labels: [])
        update(FarmGauges())
    }

    // MARK: Hooks (one call each where the event happens)

    /// A segment result was accepted.
    package func segmentCompleted(frames: Int, seconds: Double) {
        segmentsCompleted.increment()
        framesProcessed.increment(by: Int64(max(0, frames)))
        if seconds.isFinite, seconds >= 0 { segmentSeconds.record(seconds) }
    }

    /// A segment attempt failed (counted by the failure's error code).
    package func segmentFailed(reason: String) {
        failureCounter(reason).increment()
    }

    /// A result from `worker` arrived (dispatch latency runs until its next task is sent).
    package func resultArrived(worker: String?) {
        guard let worker else { return }
        let now = ContinuousClock.now
        resultArrivals.withLock { $0[worker] = now }
    }

    /// A task was sent to `worker`: records the dispatch latency if a result of its was waiting.
    package func taskSent(worker: String) {
        guard let arrived = resultArrivals.withLock({ $0.removeValue(forKey: worker) }) else { return }
        let d = (ContinuousClock.now - arrived).components
        dispatched(latencySeconds: Double(d.seconds) + Double(d.attoseconds) * 1e-18)
    }

    /// A task was sent `seconds` after the worker's previous result arrived.
    package func dispatched(latencySeconds seconds: Double) {
        if seconds.isFinite, seconds >= 0 { dispatchLatency.record(seconds) }
    }

    /// An upload chunk of `bytes` was stored.
    package func uploaded(bytes: Int) { uploadBytes.increment(by: Int64(max(0, bytes))) }
    /// An upload of `bytes` was skipped: the store had the file.
    package func uploadReused(bytes: Int64) { uploadReusedBytes.increment(by: max(0, bytes)) }

    /// A job's output of `bytes` was stitched.
    package func stitched(bytes: Int64) {
        jobsStitched.increment()
        stitchBytes.increment(by: max(0, bytes))
    }

    private func failureCounter(_ reason: String) -> Counter {
        registry.makeCounter(descriptor: .init(namespace: "dubfarm", metricName: "segment_failures", unitName: "total",
                                               helpText: "Failed segment attempts, by error code"),
                             labels: [("reason", reason)])
    }

    // MARK: Gauges from the database

    /// Sets the by-state gauges (every known state is reported, zero included).
    package func update(_ g: FarmGauges) {
        func gauge(_ name: String, _ help: String, _ label: String, _ value: String) -> Gauge {
            registry.makeGauge(descriptor: .init(namespace: "dubfarm", metricName: name, unitName: "", helpText: help), labels: [(label, value)])
        }
        for s in Set(JobState.allCases.map(\.rawValue)).union(g.jobs.keys) {
            gauge("jobs", "Jobs by state (from the database)", "state", s).set(Double(g.jobs[s] ?? 0))
        }
        for s in Set(SegmentState.allCases.map(\.rawValue)).union(g.segments.keys) {
            gauge("segments", "Segments by state (from the database)", "state", s).set(Double(g.segments[s] ?? 0))
        }
        for s in Set(Self.workerStates).union(g.workers.keys) {
            gauge("workers", "Workers by state (from the database)", "state", s).set(Double(g.workers[s] ?? 0))
        }
        registry.makeGauge(descriptor: .init(namespace: "dubfarm", metricName: "queue_depth", unitName: "",
                                             helpText: "Segments waiting for a worker (pending)"), labels: [])
            .set(Double(g.queueDepth))
    }

    /// The Prometheus text exposition of every metric.
    package func exposition() -> String { registry.emitToString() }
}
