import DubfarmCore
import Foundation

// The read models the coordinator serves and the CLI prints (`--json` prints them as they are;
// docs/json-output.md documents the schema).

/// Segment counts of a job by state.
public struct SegmentCounts: Codable, Sendable, Hashable {
    public var total = 0, pending = 0, leased = 0, done = 0, dead = 0, cancelled = 0
    public init() {}
}

/// One job, as `jobs` and `status` show it.
/// A job's personalisation phase: the fine-tune on its own footage before it is dubbed.
public struct PersonalisationView: Codable, Sendable, Hashable {
    /// `preparing`, `pending`, `leased`, `done` or `failed`.
    public var state: String
    public var budgetSeconds: Int
    public var fallback: Bool
    /// Seconds of training spent (across attempts) and the step and loss reached.
    public var elapsedSeconds: Double
    public var step: Int
    public var loss: Double?
    public var worker: String?
    /// Attempts so far, failed attempts, the step of the checkpoint kept and the step the
    /// current attempt resumed from.
    public var leases: Int
    public var failures: Int
    public var checkpointStep: Int?
    public var resumedFrom: Int?
    public var datasetFrames: Int?
    public var weights: String?
    /// The trainer's figures on the held-back part of the clip (JSON), once done.
    public var report: String?
    public var error: String?
    /// Workers the job asked to train on at once, and how many the current (or last) attempt
    /// trains on (data-parallel; nil from a coordinator that does not say).
    public var workers: Int?
    public var worldSize: Int?

    public init(state: String, budgetSeconds: Int, fallback: Bool, elapsedSeconds: Double, step: Int, leases: Int, failures: Int) {
        self.state = state
        self.budgetSeconds = budgetSeconds
        self.fallback = fallback
        self.elapsedSeconds = elapsedSeconds
        self.step = step
        self.leases = leases
        self.failures = failures
    }

    /// Share of the budget spent, 0…1.
    public var progress: Double { state == "done" ? 1 : min(1, elapsedSeconds / Double(max(budgetSeconds, 1))) }

    /// One line for people: `training 41 % (step 120, loss 0.213) on w1` and the like.
    public var summary: String {
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

public struct JobView: Codable, Sendable, Hashable {
    public var id: Int64
    public var state: JobState
    public var priority: Int
    public var createdAt: Date
    public var updatedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// The file names the user submitted.
    public var video: String
    public var audio: String
    public var face: String?
    public var stage: String
    /// Exact video frame count (known once planned).
    public var frames: Int?
    /// Frame rate as `num/den`.
    public var frameRate: String?
    public var width: Int?
    public var height: Int?
    public var segments: SegmentCounts
    /// Frames finished (done segments plus progress of leased ones).
    public var framesDone: Int
    /// How the dub track was fitted to the video (`exact`, `padded …`, `trimmed …`), once stitched.
    public var audioFit: String?
    public var outputBytes: Int64?
    public var errorCode: String?
    public var error: String?
    /// The model the job requires (`submit --model`), if any.
    public var model: String?
    /// Why pending segments wait when no connected worker can take them
    /// (`waiting for a worker with model X …`); absent when a compatible worker is connected.
    public var waitingFor: String?
    /// Its personalisation (`submit --personalise`), if it asked for one.
    public var personalisation: PersonalisationView?
    /// SHA-256 of the personalised weights its segments run on, once trained.
    public var weights: String?

    public init(id: Int64, state: JobState, priority: Int, createdAt: Date, updatedAt: Date, video: String, audio: String,
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
    public var progress: Double {
        if state == .done { return 1 }
        guard let f = frames, f > 0 else { return 0 }
        return min(1, Double(framesDone) / Double(f))
    }
}

/// One segment of a job.
public struct SegmentView: Codable, Sendable, Hashable {
    public var index: Int
    public var startFrame: Int
    public var endFrame: Int
    public var state: SegmentState
    public var worker: String?
    public var leases: Int
    public var failures: Int
    public var framesDone: Int
    public var error: String?
    public var processSeconds: Double?
    public var stats: SegmentStats?

    public init(index: Int, startFrame: Int, endFrame: Int, state: SegmentState, worker: String?, leases: Int,
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
public struct JobDetail: Codable, Sendable, Hashable {
    public var job: JobView
    public var segments: [SegmentView]
    public init(job: JobView, segments: [SegmentView]) {
        self.job = job
        self.segments = segments
    }
}

/// A worker as the coordinator sees it.
public struct WorkerView: Codable, Sendable, Hashable {
    public var name: String
    public var host: String
    /// `idle`, `busy`, `lost` or `gone`.
    public var state: String
    public var threads: Int
    public var stage: String
    public var model: String?
    /// `JOB/SEGMENT` it is working on.
    public var current: String?
    public var connectedAt: Date?
    public var lastSeen: Date
    public var segmentsDone: Int
    public var framesDone: Int

    public init(name: String, host: String, state: String, threads: Int, stage: String, model: String?, current: String?,
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
public struct EventView: Codable, Sendable, Hashable {
    public var id: Int64
    public var at: Date
    public var job: Int64?
    public var segment: Int?
    public var worker: String?
    /// `job`, `segment` or `worker`.
    public var kind: String
    public var from: String?
    public var to: String?
    public var reason: String

    public init(id: Int64, at: Date, job: Int64?, segment: Int?, worker: String?, kind: String, from: String?,
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
