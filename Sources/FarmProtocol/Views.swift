import DubfarmCore
import Foundation

// The read models the coordinator serves and the CLI prints (`--json` prints them as they are;
// docs/json-output.md documents the schema).

/// Segment counts of a job by state.
package struct SegmentCounts: Codable, Sendable, Hashable {
    package var total = 0, pending = 0, leased = 0, done = 0, dead = 0, cancelled = 0
    package init() {}
}

/// One job, as `jobs` and `status` show it.
/// A job's personalisation phase: the fine-tune on its own footage before it is dubbed.
package struct PersonalisationView: Codable, Sendable, Hashable {
    /// `preparing`, `pending`, `leased`, `done` or `failed`.
    package var state: String
    package var budgetSeconds: Int
    package var fallback: Bool
    /// Seconds of training spent (across attempts) and the step and loss reached.
    package var elapsedSeconds: Double
    package var step: Int
    package var loss: Double?
    package var worker: String?
    /// Attempts so far, failed attempts, the step of the checkpoint kept and the step the
    /// current attempt resumed from.
    package var leases: Int
    package var failures: Int
    package var checkpointStep: Int?
    package var resumedFrom: Int?
    package var datasetFrames: Int?
    package var weights: String?
    /// The trainer's figures on the held-back part of the clip (JSON), once done.
    package var report: String?
    package var error: String?
    /// Workers the job asked to train on at once, and how many the current (or last) attempt
    /// trains on (data-parallel; nil from a coordinator that does not say).
    package var workers: Int?
    package var worldSize: Int?

    package init(state: String, budgetSeconds: Int, fallback: Bool, elapsedSeconds: Double, step: Int, leases: Int, failures: Int) {
        self.state = state
        self.budgetSeconds = budgetSeconds
        self.fallback = fallback
        self.elapsedSeconds = elapsedSeconds
        self.step = step
        self.leases = leases
        self.failures = failures
    }

    /// Share of the budget spent, 0…1.
    package var progress: Double { state == "done" ? 1 : min(1, elapsedSeconds / Double(max(budgetSeconds, 1))) }

    /// One line for people: `training 41 % (step 120, loss 0.213) on w1` and the like.
    package var summary: String {
        let loss = loss.map { String(format: ", loss %.4f", $0) } ?? ""
        switch state {
        case "preparing": return "building the dataset from the video"
        case "pending": return checkpointStep.map { "waiting for a worker (resumes at step \($0))" } ?? "waiting for a worker that can personalise"
        case "leased":
            return String(format: "training %.0f %% of %d s (step %d", progress * 100, budgetSeconds, step) + loss + ")"
                + (worker.map { " on \($0)" } ?? "") + ((worldSize ?? 1) > 1 ? " + \(worldSize! - 1) more" : "") + (resumedFrom.map { $0 > 0 ? ", resumed at step \($0)" : "" } ?? "")
        case "done": return "done: \(step) steps in \(Int(elapsedSeconds)) s, weights \(weights.map { String($0.prefix(16)) } ?? "?")"
        default: return "failed: \(error ?? "no reason recorded")" + (fallback ? " (running on the default weights)" : "")
        }
    }
}

package struct JobView: Codable, Sendable, Hashable {
    package var id: Int64
    package var state: JobState
    package var priority: Int
    package var createdAt: Date
    package var updatedAt: Date
    package var startedAt: Date?
    package var finishedAt: Date?
    /// The file names the user submitted.
    package var video: String
    package var audio: String
    package var face: String?
    package var stage: String
    /// Exact video frame count (known once planned).
    package var frames: Int?
    /// Frame rate as `num/den`.
    package var frameRate: String?
    package var width: Int?
    package var height: Int?
    package var segments: SegmentCounts
    /// Frames finished (done segments plus progress of leased ones).
    package var framesDone: Int
    /// How the dub track was fitted to the video (`exact`, `padded …`, `trimmed …`), once stitched.
    package var audioFit: String?
    package var outputBytes: Int64?
    package var errorCode: String?
    package var error: String?
    /// The model the job requires (`submit --model`), if any.
    package var model: String?
    /// Why pending segments wait when no connected worker can take them
    /// (`waiting for a worker with model X …`); absent when a compatible worker is connected.
    package var waitingFor: String?
    /// Its personalisation (`submit --personalise`), if it asked for one.
    package var personalisation: PersonalisationView?
    /// SHA-256 of the personalised weights its segments run on, once trained.
    package var weights: String?
    /// `submit --name` and `--label k=v`.
    package var name: String?
    package var labels: [String: String]?
    /// When `dubfarm gc` removed its inputs and output (nothing left to fetch).
    package var mediaRemovedAt: Date?

    package init(id: Int64, state: JobState, priority: Int, createdAt: Date, updatedAt: Date, video: String, audio: String,
                face: String?, stage: String) {
        self.id = id
        self.state = state
        self.priority = priority
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.video = video
        self.audio = audio
        self.face = face
        self.stage = stage
        self.segments = SegmentCounts()
        self.framesDone = 0
    }

    /// Fraction done in 0...1.
    package var progress: Double {
        if state == .done { return 1 }
        guard let f = frames, f > 0 else { return 0 }
        return min(1, Double(framesDone) / Double(f))
    }
}

/// One segment of a job.
package struct SegmentView: Codable, Sendable, Hashable {
    package var index: Int
    package var startFrame: Int
    package var endFrame: Int
    package var state: SegmentState
    package var worker: String?
    package var leases: Int
    package var failures: Int
    package var framesDone: Int
    package var error: String?
    package var processSeconds: Double?
    package var stats: SegmentStats?

    package init(index: Int, startFrame: Int, endFrame: Int, state: SegmentState, worker: String?, leases: Int,
                failures: Int, framesDone: Int, error: String?, processSeconds: Double?, stats: SegmentStats?) {
        self.index = index
        self.startFrame = startFrame
        self.endFrame = endFrame
        self.state = state
        self.worker = worker
        self.leases = leases
        self.failures = failures
        self.framesDone = framesDone
        self.error = error
        self.processSeconds = processSeconds
        self.stats = stats
    }
}

/// A job with its segments (`status JOB`).
package struct JobDetail: Codable, Sendable, Hashable {
    package var job: JobView
    package var segments: [SegmentView]
    package init(job: JobView, segments: [SegmentView]) {
        self.job = job
        self.segments = segments
    }
}

/// A worker as the coordinator sees it.
package struct WorkerView: Codable, Sendable, Hashable {
    package var name: String
    package var host: String
    /// `idle`, `busy`, `lost` or `gone`.
    package var state: String
    package var threads: Int
    package var stage: String
    package var model: String?
    /// `JOB/SEGMENT` it is working on.
    package var current: String?
    package var connectedAt: Date?
    package var lastSeen: Date
    package var segmentsDone: Int
    package var framesDone: Int

    package init(name: String, host: String, state: String, threads: Int, stage: String, model: String?, current: String?,
                connectedAt: Date?, lastSeen: Date, segmentsDone: Int, framesDone: Int) {
        self.name = name
        self.host = host
        self.state = state
        self.threads = threads
        self.stage = stage
        self.model = model
        self.current = current
        self.connectedAt = connectedAt
        self.lastSeen = lastSeen
        self.segmentsDone = segmentsDone
        self.framesDone = framesDone
    }
}

/// One recorded state change.
package struct EventView: Codable, Sendable, Hashable {
    package var id: Int64
    package var at: Date
    package var job: Int64?
    package var segment: Int?
    package var worker: String?
    /// `job`, `segment` or `worker`.
    package var kind: String
    package var from: String?
    package var to: String?
    package var reason: String

    package init(id: Int64, at: Date, job: Int64?, segment: Int?, worker: String?, kind: String, from: String?,
                to: String?, reason: String) {
        self.id = id
        self.at = at
        self.job = job
        self.segment = segment
        self.worker = worker
        self.kind = kind
        self.from = from
        self.to = to
        self.reason = reason
    }
}
