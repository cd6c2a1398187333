import DubfarmCore
import FarmProtocol
import Foundation

/// Everything `dubfarm top` and the web dashboard show at one instant: the same `JobView`,
/// `WorkerView` and `EventView` read models that `dubfarm jobs`, `workers` and `logs` print,
/// plus the rates derived from successive snapshots (see ``RateTracker``).
package struct FarmSnapshot: Codable, Sendable, Hashable {
    /// When the coordinator (or the CLI) took the snapshot.
    package var at: Date
    /// Jobs, newest first (as `dubfarm jobs`).
    package var jobs: [JobView]
    /// Connected workers, by name (as `dubfarm workers`).
    package var workers: [WorkerView]
    /// The most recent events of all jobs, newest first (as `dubfarm logs --json`).
    package var events: [EventView]
    /// Jobs and segments counted by state over `jobs`.
    package var queue: QueueDepth
    /// Frames per second and ETAs; empty until two snapshots are a second apart.
    package var rates: FarmRates

    package init(at: Date, jobs: [JobView], workers: [WorkerView], events: [EventView] = [], rates: FarmRates = FarmRates()) {
        self.at = at
        self.jobs = jobs
        self.workers = workers
        self.events = events
        self.queue = QueueDepth(jobs: jobs)
        self.rates = rates
    }
}

/// Jobs and segments by state.
package struct QueueDepth: Codable, Sendable, Hashable {
    /// Jobs per state; every `JobState` is present, zero included.
    package var jobs: [String: Int]
    /// Segments per state over all listed jobs; every `SegmentState` is present.
    package var segments: [String: Int]

    package init(jobs: [JobView]) {
        var j = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, 0) })
        var s = Dictionary(uniqueKeysWithValues: SegmentState.allCases.map { ($0.rawValue, 0) })
        for job in jobs {
            j[job.state.rawValue, default: 0] += 1
            s["pending", default: 0] += job.segments.pending
            s["leased", default: 0] += job.segments.leased
            s["done", default: 0] += job.segments.done
            s["dead", default: 0] += job.segments.dead
            s["cancelled", default: 0] += job.segments.cancelled
        }
        self.jobs = j
        self.segments = s
    }
}

/// Rates over the last few seconds.
package struct FarmRates: Codable, Sendable, Hashable {
    /// Frames per second over the whole farm (sum over workers).
    package var framesPerSecond: Double?
    /// Per job id (as a string, for JSON): frames per second and seconds left.
    package var jobs: [String: JobRate]
    /// Per worker name: frames per second.
    package var workers: [String: Double]

    package init(framesPerSecond: Double? = nil, jobs: [String: JobRate] = [:], workers: [String: Double] = [:]) {
        self.framesPerSecond = framesPerSecond
        self.jobs = jobs
        self.workers = workers
    }
}

/// A job's speed and estimated time left.
package struct JobRate: Codable, Sendable, Hashable {
    package var framesPerSecond: Double
    /// Seconds until all frames are done at the current rate (nil when not progressing).
    package var etaSeconds: Double?

    package init(framesPerSecond: Double, etaSeconds: Double?) {
        self.framesPerSecond = framesPerSecond
        self.etaSeconds = etaSeconds
    }
}

/// Derives frames per second from successive snapshots' frame counters (jobs' `framesDone`,
/// workers' `framesDone`) over a sliding window. Pure: the caller supplies the snapshots.
package struct RateTracker: Sendable {
    /// Seconds of history the rates are computed over.
    package var window: Double
    /// Minimum span between the oldest and newest sample before a rate is reported.
    package var minimumSpan: Double
    private var samples: [(at: Date, jobs: [Int64: Int], workers: [String: Int])] = []

    package init(window: Double = 10, minimumSpan: Double = 0.9) {
        self.window = window
        self.minimumSpan = minimumSpan
    }

    /// Records `snapshot` and returns it with `rates` filled in.
    package mutating func observe(_ snapshot: FarmSnapshot) -> FarmSnapshot {
        let now = snapshot.at
        samples.append((now, Dictionary(snapshot.jobs.map { ($0.id, $0.framesDone) }, uniquingKeysWith: { a, _ in a }),
                        Dictionary(snapshot.workers.map { ($0.name, $0.framesDone) }, uniquingKeysWith: { a, _ in a })))
        // Keep one sample older than the window start so the span covers the whole window.
        while samples.count > 2, now.timeIntervalSince(samples[1].at) >= window { samples.removeFirst() }
        var out = snapshot
        out.rates = rates(for: snapshot)
        return out
    }

    private func rates(for snapshot: FarmSnapshot) -> FarmRates {
        guard let first = samples.first, let last = samples.last else { return FarmRates() }
        let span = last.at.timeIntervalSince(first.at)
        guard span >= minimumSpan else { return FarmRates() }
        var rates = FarmRates()
        var total = 0.0
        for w in snapshot.workers {
            guard let before = first.workers[w.name] else { continue }
            // A worker that reconnected restarts its counter: no rate for it this window.
            let fps = max(0, Double(w.framesDone - before)) / span
            rates.workers[w.name] = fps
            total += fps
        }
        rates.framesPerSecond = total
        for j in snapshot.jobs where !j.state.isTerminal {
            guard let before = first.jobs[j.id] else { continue }
            let fps = max(0, Double(j.framesDone - before)) / span
            var eta: Double?
            if fps > 0, let frames = j.frames { eta = Double(max(0, frames - j.framesDone)) / fps }
            rates.jobs[String(j.id)] = JobRate(framesPerSecond: fps, etaSeconds: eta)
        }
        return rates
    }
}

/// What the dashboard's job page shows: the job with its segments (as `dubfarm status`) and its
/// whole event history (as `dubfarm logs`).
package struct JobPage: Codable, Sendable, Hashable {
    package var detail: JobDetail
    package var events: [EventView]
    /// Whether a thumbnail of a finished frame can be asked for (`/api/jobs/ID/thumbnail`).
    package var hasThumbnail: Bool
    package init(detail: JobDetail, events: [EventView], hasThumbnail: Bool) {
        self.detail = detail
        self.events = events
        self.hasThumbnail = hasThumbnail
    }
}

/// What a dashboard user can do to a job.
package enum JobAction: Sendable, Hashable {
    case cancel, retry
    case setPriority(Int)
}
