import DubfarmCore
import Foundation

// MARK: Jobs

/// What a user submits: the inputs (names in the media store) and how to render them.
public struct NewJob: Sendable, Hashable {
    public var videoName: String
    public var audioName: String
    /// The source face; `nil` means lip sync only.
    public var faceName: String?
    /// Higher runs first; equal priorities run oldest first.
    public var priority: Int
    public var params: JobParams
    /// Who submitted it (a CLI user, a key id), for events and `status`.
    public var submittedBy: String?

    public init(videoName: String, audioName: String, faceName: String? = nil, priority: Int = 0,
                params: JobParams = JobParams(), submittedBy: String? = nil) {
        self.videoName = videoName
        self.audioName = audioName
        self.faceName = faceName
        self.priority = priority
        self.params = params
        self.submittedBy = submittedBy
    }
}

/// How a job is rendered; stored as the job's `params` JSON.
public struct JobParams: Sendable, Hashable, Codable {
    /// Encoder settings shared by every segment of the job.
    public var encoder: EncoderSettings
    /// Nominal segment length in seconds.
    public var segmentSeconds: Double
    /// Free-form options (model name, face selection, …).
    public var options: [String: String]

    public init(encoder: EncoderSettings = EncoderSettings(), segmentSeconds: Double = 10, options: [String: String] = [:]) {
        self.encoder = encoder
        self.segmentSeconds = segmentSeconds
        self.options = options
    }
}

/// How many of a job's segments are in each state.
public struct SegmentCounts: Sendable, Hashable {
    public var pending = 0
    public var leased = 0
    public var done = 0
    public var dead = 0
    public var cancelled = 0
    public init() {}
    public var total: Int { pending + leased + done + dead + cancelled }
}

/// A job as stored.
public struct JobRecord: Sendable, Hashable, Identifiable {
    public var id: JobID
    public var state: JobState
    public var priority: Int
    public var createdAt: Date
    public var updatedAt: Date
    /// When it first became `running`.
    public var startedAt: Date?
    /// When it became `done`, `failed` or `cancelled`.
    public var finishedAt: Date?
    public var submittedBy: String?
    public var videoName: String
    public var audioName: String
    public var faceName: String?
    /// What the coordinator is doing with it now, for people.
    public var stage: String?
    // The plan (nil until planned).
    public var frameCount: Int?
    public var frameRate: Rational?
    public var width: Int?
    public var height: Int?
    public var rotation: Int?
    public var segmentFrames: Int?
    public var segmentCount: Int?
    // The result.
    public var audioFit: AudioFit?
    public var outputBytes: Int64?
    // The failure.
    public var errorCode: DubfarmError.Code?
    public var error: String?
    public var params: JobParams
    /// Coordinator-private planning data (JSON).
    public var planData: String?
    /// The coordinator that took it for planning (``FarmStore/claimQueuedJob(actor:)``).
    public var coordinator: String?
    /// Segment counts, where the query loaded them.
    public var segments: SegmentCounts?
    /// SHA-256 of the personalised weights its segments run on (`submit --personalise`), once
    /// trained; nil runs the workers' own weights.
    public var weights: String?

    /// Whether the job has a plan (segments exist).
    public var isPlanned: Bool { segmentCount != nil }
}

/// The result of probing and cutting a job's video, saved by ``FarmStore/savePlan(job:plan:actor:)``.
public struct PlannedJob: Sendable, Hashable {
    public var frameCount: Int
    public var frameRate: Rational
    public var width: Int
    public var height: Int
    public var rotation: Int
    /// Nominal frames per segment.
    public var segmentFrames: Int
    /// The segments, indexed 0..<n without gaps.
    public var spans: [SegmentSpan]
    /// Coordinator-private data to keep with the job (JSON text).
    public var planData: String?

    public init(frameCount: Int, frameRate: Rational, width: Int, height: Int, rotation: Int = 0,
                segmentFrames: Int, spans: [SegmentSpan], planData: String? = nil) {
        self.frameCount = frameCount
        self.frameRate = frameRate
        self.width = width
        self.height = height
        self.rotation = rotation
        self.segmentFrames = segmentFrames
        self.spans = spans
        self.planData = planData
    }
}

/// What ``FarmStore/jobsToResume(actor:)`` found after a coordinator restart.
public struct ResumeReport: Sendable, Hashable {
    /// Jobs that were being planned: back in the queue.
    public var requeued: [JobID]
    /// Jobs that were being stitched: stitch them again.
    public var stitching: [JobRecord]
    /// Running jobs whose segments are all done (the coordinator died before marking them
    /// `stitching`): stitch them.
    public var readyToStitch: [JobRecord]
}

// MARK: Segments

/// A segment as stored.
public struct SegmentRecord: Sendable, Hashable {
    public var ref: SegmentRef
    /// Absolute input frame indices.
    public var frames: Range<Int>
    public var state: SegmentState
    public var lease: LeaseToken?
    public var leasedBy: String?
    public var leaseExpiresAt: Date?
    public var leases: Int
    public var failures: Int
    /// Not handed out before this instant (backoff); `nil` when there is no backoff.
    public var notBefore: Date?
    public var error: String?
    public var framesDone: Int
    public var framesTotal: Int
    public var resultBytes: Int64?
    public var processSeconds: Double?
    public var startedAt: Date?
    public var finishedAt: Date?
    public var updatedAt: Date

    /// The pure state machine for this row.
    public var machine: SegmentStateMachine {
        SegmentStateMachine(state: state, lease: lease, leasedBy: leasedBy, failures: failures, leases: leases)
    }
}

/// A segment just leased to a worker: what the coordinator needs to send the task.
public struct ClaimedSegment: Sendable, Hashable {
    public var ref: SegmentRef
    public var frames: Range<Int>
    /// The fencing token: the worker's replies must carry it.
    public var token: LeaseToken
    public var worker: String
    public var leaseExpiresAt: Date
    /// Leases of this segment so far, this one included (1 on the first attempt).
    public var attempt: Int
    /// Failed attempts so far.
    public var failures: Int

    public init(ref: SegmentRef, frames: Range<Int>, token: LeaseToken, worker: String, leaseExpiresAt: Date,
                attempt: Int, failures: Int) {
        self.ref = ref
        self.frames = frames
        self.token = token
        self.worker = worker
        self.leaseExpiresAt = leaseExpiresAt
        self.attempt = attempt
        self.failures = failures
    }
}

/// A lease that was active when its segment was taken away (cancel, job failure): the
/// coordinator tells `worker` to stop.
public struct LeasedSegment: Sendable, Hashable {
    public var ref: SegmentRef
    public var token: LeaseToken
    public var worker: String

    public init(ref: SegmentRef, token: LeaseToken, worker: String) {
        self.ref = ref
        self.token = token
        self.worker = worker
    }
}

/// What accepting a result led to.
public struct CompletionOutcome: Sendable, Hashable {
    /// Whether every segment of the job is now done (time to stitch).
    public var allDone: Bool

    public init(allDone: Bool) {
        self.allDone = allDone
    }
}

/// What recording a failed attempt led to.
public struct FailureOutcome: Sendable, Hashable {
    /// Retry after a backoff, or dead.
    public var segment: SegmentStateMachine.FailureOutcome
    /// Failed attempts of the segment so far.
    public var failures: Int
    /// The worker that failed, and how often it has failed segments of this job.
    public var worker: String?
    public var workerFailuresInJob: Int
    /// Whether the worker will no longer get this job's segments.
    public var workerBlocklisted: Bool
    /// Whether the job failed because of this (the segment is dead).
    public var jobFailed: Bool
    /// Leases cancelled because the job failed: tell those workers to stop.
    public var cancelledLeases: [LeasedSegment]
}

// MARK: Workers

/// What a worker says about itself when it connects.
public struct WorkerInfo: Sendable, Hashable {
    public var name: String
    public var host: String?
    public var threads: Int?
    /// The model it runs.
    public var model: String?
    public var capabilities: [String: String]

    public init(name: String, host: String? = nil, threads: Int? = nil, model: String? = nil,
                capabilities: [String: String] = [:]) {
        self.name = name
        self.host = host
        self.threads = threads
        self.model = model
        self.capabilities = capabilities
    }
}

/// A worker's state as the coordinator sees it.
public enum WorkerStatus: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// Connected, waiting for work.
    case idle
    /// Working on a segment.
    case busy
    /// Finishing its segment, then leaving.
    case draining
    /// Missed its heartbeats.
    case lost
    /// Disconnected.
    case gone
    public var description: String { rawValue }
}

/// A worker as stored.
public struct WorkerRecord: Sendable, Hashable {
    public var name: String
    public var host: String?
    public var state: WorkerStatus
    public var threads: Int?
    public var stage: String?
    public var model: String?
    public var capabilities: [String: String]
    public var connectedAt: Date
    public var lastSeen: Date
    /// The segment it works on.
    public var current: SegmentRef?
    public var segmentsDone: Int64
    public var framesDone: Int64
}

// MARK: Events

/// What an event is about.
public enum EventKind: String, Sendable, Hashable, Codable, CaseIterable {
    case job, segment, worker, personalisation
}

/// One recorded state change: who, when, why.
public struct EventRecord: Sendable, Hashable, Identifiable {
    /// Increasing: pass the last one seen as `afterID` to follow the log.
    public var id: Int64
    public var at: Date
    public var kind: EventKind
    public var job: JobID?
    public var segment: Int?
    public var worker: String?
    public var from: String?
    public var to: String?
    public var reason: String?
    /// Who made the change (a coordinator, a worker, a user).
    public var actor: String?
}

// MARK: Audio fit text form

extension AudioFit {
    /// `exact`, `padded:1.25`, `trimmed:0.5`.
    var storedForm: String {
        switch self {
        case .exact: return "exact"
        case .padded(let s): return "padded:\(s)"
        case .trimmed(let s): return "trimmed:\(s)"
        }
    }

    init?(storedForm s: String) {
        if s == "exact" {
            self = .exact
            return
        }
        let parts = s.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let v = Double(parts[1]) else { return nil }
        switch parts[0] {
        case "padded": self = .padded(seconds: v)
        case "trimmed": self = .trimmed(seconds: v)
        default: return nil
        }
    }
}
