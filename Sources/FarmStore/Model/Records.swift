import DubfarmCore
import Foundation

// MARK: Jobs

/// What a user submits: the inputs (names in the media store) and how to render them.
package struct NewJob: Sendable, Hashable {
    package var videoName: String
    package var audioName: String
    /// The source face; `nil` means lip sync only.
    package var faceName: String?
    /// Higher runs first; equal priorities run oldest first.
    package var priority: Int
    package var params: JobParams
    /// Who submitted it (a CLI user, a key id), for events and `status`.
    package var submittedBy: String?
    /// `submit --name` and `--label k=v` (``JobLabels`` checks them).
    package var name: String?
    package var labels: [String: String]

    package init(videoName: String, audioName: String, faceName: String? = nil, priority: Int = 0,
                params: JobParams = JobParams(), submittedBy: String? = nil, name: String? = nil, labels: [String: String] = [:]) {
        self.name = name
        self.labels = labels
        self.videoName = videoName
        self.audioName = audioName
        self.faceName = faceName
        self.priority = priority
        self.params = params
        self.submittedBy = submittedBy
    }
}

/// How a job is rendered; stored as the job's `params` JSON.
package struct JobParams: Sendable, Hashable, Codable {
    /// Encoder settings shared by every segment of the job.
    package var encoder: EncoderSettings
    /// Nominal segment length in seconds.
    package var segmentSeconds: Double
    /// Free-form options (model name, face selection, …).
    package var options: [String: String]

    package init(encoder: EncoderSettings = EncoderSettings(), segmentSeconds: Double = 10, options: [String: String] = [:]) {
        self.encoder = encoder
        self.segmentSeconds = segmentSeconds
        self.options = options
    }
}

/// How many of a job's segments are in each state.
package struct SegmentCounts: Sendable, Hashable {
    package var pending = 0
    package var leased = 0
    package var done = 0
    package var dead = 0
    package var cancelled = 0
    package init() {}
    package var total: Int { pending + leased + done + dead + cancelled }
}

/// A job as stored.
package struct JobRecord: Sendable, Hashable, Identifiable {
    package var id: JobID
    package var state: JobState
    package var priority: Int
    package var createdAt: Date
    package var updatedAt: Date
    /// When it first became `running`.
    package var startedAt: Date?
    /// When it became `done`, `failed` or `cancelled`.
    package var finishedAt: Date?
    package var submittedBy: String?
    /// Its name and labels (`submit --name`, `--label`).
    package var name: String?
    package var labels: [String: String]
    /// When `dubfarm gc` removed its inputs and output from the media store.
    package var mediaRemovedAt: Date?
    package var videoName: String
    package var audioName: String
    package var faceName: String?
    /// What the coordinator is doing with it now, for people.
    package var stage: String?
    // The plan (nil until planned).
    package var frameCount: Int?
    package var frameRate: Rational?
    package var width: Int?
    package var height: Int?
    package var rotation: Int?
    package var segmentFrames: Int?
    package var segmentCount: Int?
    // The result.
    package var audioFit: AudioFit?
    package var outputBytes: Int64?
    // The failure.
    package var errorCode: DubfarmError.Code?
    package var error: String?
    package var params: JobParams
    /// Coordinator-private planning data (JSON).
    package var planData: String?
    /// The coordinator that took it for planning (``FarmStore/claimQueuedJob(actor:)``).
    package var coordinator: String?
    /// Segment counts, where the query loaded them.
    package var segments: SegmentCounts?
    /// SHA-256 of the personalised weights its segments run on (`submit --personalise`), once
    /// trained; nil runs the workers' own weights.
    package var weights: String?

    /// Whether the job has a plan (segments exist).
    package var isPlanned: Bool { segmentCount != nil }
}

/// The result of probing and cutting a job's video, saved by ``FarmStore/savePlan(job:plan:actor:)``.
package struct PlannedJob: Sendable, Hashable {
    package var frameCount: Int
    package var frameRate: Rational
    package var width: Int
    package var height: Int
    package var rotation: Int
    /// Nominal frames per segment.
    package var segmentFrames: Int
    /// The segments, indexed 0..<n without gaps.
    package var spans: [SegmentSpan]
    /// Coordinator-private data to keep with the job (JSON text).
    package var planData: String?

    package init(frameCount: Int, frameRate: Rational, width: Int, height: Int, rotation: Int = 0,
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
package struct ResumeReport: Sendable, Hashable {
    /// Jobs that were being planned: back in the queue.
    package var requeued: [JobID]
    /// Jobs that were being stitched: stitch them again.
    package var stitching: [JobRecord]
    /// Running jobs whose segments are all done (the coordinator died before marking them
    /// `stitching`): stitch them.
    package var readyToStitch: [JobRecord]
}

// MARK: Segments

/// A segment as stored.
package struct SegmentRecord: Sendable, Hashable {
    package var ref: SegmentRef
    /// Absolute input frame indices.
    package var frames: Range<Int>
    package var state: SegmentState
    package var lease: LeaseToken?
    package var leasedBy: String?
    package var leaseExpiresAt: Date?
    package var leases: Int
    package var failures: Int
    /// Not handed out before this instant (backoff); `nil` when there is no backoff.
    package var notBefore: Date?
    package var error: String?
    package var framesDone: Int
    package var framesTotal: Int
    package var resultBytes: Int64?
    package var processSeconds: Double?
    package var startedAt: Date?
    package var finishedAt: Date?
    package var updatedAt: Date

    /// The pure state machine for this row.
    package var machine: SegmentStateMachine {
        SegmentStateMachine(state: state, lease: lease, leasedBy: leasedBy, failures: failures, leases: leases)
    }
}

/// A segment just leased to a worker: what the coordinator needs to send the task.
package struct ClaimedSegment: Sendable, Hashable {
    package var ref: SegmentRef
    package var frames: Range<Int>
    /// The fencing token: the worker's replies must carry it.
    package var token: LeaseToken
    package var worker: String
    package var leaseExpiresAt: Date
    /// Leases of this segment so far, this one included (1 on the first attempt).
    package var attempt: Int
    /// Failed attempts so far.
    package var failures: Int

    package init(ref: SegmentRef, frames: Range<Int>, token: LeaseToken, worker: String, leaseExpiresAt: Date,
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
package struct LeasedSegment: Sendable, Hashable {
    package var ref: SegmentRef
    package var token: LeaseToken
    package var worker: String

    package init(ref: SegmentRef, token: LeaseToken, worker: String) {
        self.ref = ref
        self.token = token
        self.worker = worker
    }
}

/// What accepting a result led to.
package struct CompletionOutcome: Sendable, Hashable {
    /// Whether every segment of the job is now done (time to stitch).
    package var allDone: Bool

    package init(allDone: Bool) {
        self.allDone = allDone
    }
}

/// What accepting a partial result led to: the segment now holds the frames returned, and the
/// rest of its frames are a new pending segment.
package struct PartialOutcome: Sendable, Hashable {
    /// The frames the worker returned (the segment's new range; it is done).
    package var finished: Range<Int>
    /// The new segment for the frames it did not finish.
    package var remainder: SegmentRef
    package var remainderFrames: Range<Int>

    package init(finished: Range<Int>, remainder: SegmentRef, remainderFrames: Range<Int>) {
        self.finished = finished
        self.remainder = remainder
        self.remainderFrames = remainderFrames
    }
}

/// What recording a failed attempt led to.
package struct FailureOutcome: Sendable, Hashable {
    /// Retry after a backoff, or dead.
    package var segment: SegmentStateMachine.FailureOutcome
    /// Failed attempts of the segment so far.
    package var failures: Int
    /// The worker that failed, and how often it has failed segments of this job.
    package var worker: String?
    package var workerFailuresInJob: Int
    /// Whether the worker will no longer get this job's segments.
    package var workerBlocklisted: Bool
    /// Whether the job failed because of this (the segment is dead).
    package var jobFailed: Bool
    /// Leases cancelled because the job failed: tell those workers to stop.
    package var cancelledLeases: [LeasedSegment]
}

// MARK: Workers

/// What a worker says about itself when it connects.
package struct WorkerInfo: Sendable, Hashable {
    package var name: String
    package var host: String?
    package var threads: Int?
    /// The model it runs.
    package var model: String?
    package var capabilities: [String: String]

    package init(name: String, host: String? = nil, threads: Int? = nil, model: String? = nil,
                capabilities: [String: String] = [:]) {
        self.name = name
        self.host = host
        self.threads = threads
        self.model = model
        self.capabilities = capabilities
    }
}

/// A worker's state as the coordinator sees it.
package enum WorkerStatus: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
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
    package var description: String { rawValue }
}

/// A worker as stored.
package struct WorkerRecord: Sendable, Hashable {
    package var name: String
    package var host: String?
    package var state: WorkerStatus
    package var threads: Int?
    package var stage: String?
    package var model: String?
    package var capabilities: [String: String]
    package var connectedAt: Date
    package var lastSeen: Date
    /// The segment it works on.
    package var current: SegmentRef?
    package var segmentsDone: Int64
    package var framesDone: Int64
}

// MARK: Events

/// What an event is about.
package enum EventKind: String, Sendable, Hashable, Codable, CaseIterable {
    case job, segment, worker, personalisation
}

/// One recorded state change: who, when, why.
package struct EventRecord: Sendable, Hashable, Identifiable {
    /// Increasing: pass the last one seen as `afterID` to follow the log.
    package var id: Int64
    package var at: Date
    package var kind: EventKind
    package var job: JobID?
    package var segment: Int?
    package var worker: String?
    package var from: String?
    package var to: String?
    package var reason: String?
    /// Who made the change (a coordinator, a worker, a user).
    package var actor: String?
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
