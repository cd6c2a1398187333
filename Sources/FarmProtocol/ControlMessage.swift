import DubfarmCore
import Foundation

/// Starts an upload: the file's name (for display only), size and SHA-256.
package struct UploadBegin: Codable, Sendable, Hashable {
    package var name: String
    package var size: Int64
    package var sha256: String
    package init(name: String, size: Int64, sha256: String) {
        self.name = name
        self.size = size
        self.sha256 = sha256
    }
}
/// The coordinator's answer to ``UploadBegin``.
///
/// The coordinator keeps uploads by their SHA-256: when it already has the file (`complete`)
/// the client sends nothing; when an earlier upload of it was cut off, `received` says where to
/// go on from. Both are absent from coordinators before content addressing (send everything).
package struct UploadStarted: Codable, Sendable, Hashable {
    package var id: String
    package var chunkSize: Int
    /// Bytes the coordinator already holds; the client sends from this offset.
    package var received: Int64?
    /// The coordinator has the whole file already: nothing to send, no UPLOAD-END needed.
    package var complete: Bool?
    package init(id: String, chunkSize: Int, received: Int64? = nil, complete: Bool? = nil) {
        self.id = id
        self.chunkSize = chunkSize
        self.received = received
        self.complete = complete
    }
}
/// Bytes received so far / the verified upload.
package struct UploadStatus: Codable, Sendable, Hashable {
    package var id: String
    package var received: Int64
    package var sha256: String?
    package init(id: String, received: Int64, sha256: String? = nil) {
        self.id = id
        self.received = received
        self.sha256 = sha256
    }
}
/// A job to create from finished uploads.
package struct SubmitSpec: Codable, Sendable, Hashable {
    /// Upload ids.
    package var video: String
    package var audio: String
    package var face: String?
    /// The user's file names, for display only (never used as paths).
    package var videoName: String
    package var audioName: String
    package var faceName: String?
    package var priority: Int
    /// The stage to run; `nil` for the coordinator's default.
    package var stage: String?
    package var model: String?
    /// `submit --personalise[=SECONDS]`: fine-tune the model on the video first; `seconds` 0
    /// turns a coordinator's default personalisation off for this job.
    package var personalise: PersonaliseRequest?
    /// `submit --name` and `--label k=v` (``JobLabels``).
    package var name: String?
    package var labels: [String: String]?
    package init(video: String, audio: String, face: String? = nil, videoName: String = "video", audioName: String = "audio",
                faceName: String? = nil, priority: Int = 0, stage: String? = nil, model: String? = nil,
                personalise: PersonaliseRequest? = nil, name: String? = nil, labels: [String: String]? = nil) {
        self.personalise = personalise
        self.name = name
        self.labels = labels
        self.video = video
        self.audio = audio
        self.face = face
        self.videoName = videoName
        self.audioName = audioName
        self.faceName = faceName
        self.priority = priority
        self.stage = stage
        self.model = model
    }
}
/// `dubfarm jobs`: newest first, filtered by state, labels (every pair must match) and name.
package struct JobsQuery: Codable, Sendable, Hashable {
    package var state: JobState?
    package var limit: Int
    package var labels: [String: String]?
    package var name: String?
    package init(state: JobState? = nil, limit: Int = 100, labels: [String: String]? = nil, name: String? = nil) {
        self.state = state
        self.limit = limit
        self.labels = labels
        self.name = name
    }
}
/// `dubfarm set-priority JOB N`.
package struct PriorityChange: Codable, Sendable, Hashable {
    package var job: Int64
    package var priority: Int
    package init(job: Int64, priority: Int) {
        self.job = job
        self.priority = priority
    }
}
/// `dubfarm gc`: remove the files of jobs finished more than `olderThanSeconds` ago and uploads
/// no unfinished job needs that were last used that long ago; `dryRun` only counts them.
package struct GCRequest: Codable, Sendable, Hashable {
    package var olderThanSeconds: Double
    package var dryRun: Bool
    package init(olderThanSeconds: Double, dryRun: Bool = false) {
        self.olderThanSeconds = olderThanSeconds
        self.dryRun = dryRun
    }
}
/// What `dubfarm gc` removed (or, with `dryRun`, would remove).
package struct GCReport: Codable, Sendable, Hashable {
    /// Finished jobs whose inputs and output were removed.
    package var jobs: [Int64]
    /// Uploaded files (by SHA-256) removed, and cut-off uploads removed.
    package var uploads: Int
    package var partialUploads: Int
    package var bytes: Int64
    package var dryRun: Bool
    package init(jobs: [Int64] = [], uploads: Int = 0, partialUploads: Int = 0, bytes: Int64 = 0, dryRun: Bool = false) {
        self.jobs = jobs
        self.uploads = uploads
        self.partialUploads = partialUploads
        self.bytes = bytes
        self.dryRun = dryRun
    }
}
package struct EventsQuery: Codable, Sendable, Hashable {
    package var job: Int64?
    package var after: Int64
    package var limit: Int
    package init(job: Int64?, after: Int64 = 0, limit: Int = 500) {
        self.job = job
        self.after = after
        self.limit = limit
    }
}
package struct FetchRequest: Codable, Sendable, Hashable {
    package var job: Int64
    package var offset: Int64
    package var length: Int
    package init(job: Int64, offset: Int64, length: Int) {
        self.job = job
        self.offset = offset
        self.length = length
    }
}
/// Header of a fetched chunk; the bytes follow in the payload frame.
package struct FetchChunk: Codable, Sendable, Hashable {
    package var total: Int64
    package var offset: Int64
    package var sha256: String
    package init(total: Int64, offset: Int64, sha256: String) {
        self.total = total
        self.offset = offset
        self.sha256 = sha256
    }
}
package struct JobRef: Codable, Sendable, Hashable {
    package var job: Int64
    package init(job: Int64) { self.job = job }
}
/// The coordinator's self-description.
package struct ServerHello: Codable, Sendable, Hashable {
    package var version: String
    package var protocolName: String
    package var maxUploadBytes: Int64
    package init(version: String, protocolName: String = ProtocolName.control, maxUploadBytes: Int64) {
        self.version = version
        self.protocolName = protocolName
        self.maxUploadBytes = maxUploadBytes
    }
}
struct Empty: Codable {}

/// A request from the CLI to the coordinator's control endpoint.
///
/// On the wire: `[DUBFARM-CTL/1, request id (8 bytes), COMMAND, JSON header, payload?]`.
package enum ControlRequest: Sendable, Hashable {
    case hello
    case uploadBegin(UploadBegin)
    case uploadChunk(id: String, offset: Int64, data: [UInt8])
    case uploadEnd(id: String)
    case submit(SubmitSpec)
    case status(job: Int64)
    case jobs(JobsQuery)
    case workers
    case cancel(job: Int64)
    case retry(job: Int64)
    case fetch(FetchRequest)
    case events(EventsQuery)
    case setPriority(PriorityChange)
    case gc(GCRequest)

    package var command: String {
        switch self {
        case .hello: return "HELLO"
        case .uploadBegin: return "UPLOAD-BEGIN"
        case .uploadChunk: return "UPLOAD-CHUNK"
        case .uploadEnd: return "UPLOAD-END"
        case .submit: return "SUBMIT"
        case .status: return "STATUS"
        case .jobs: return "JOBS"
        case .workers: return "WORKERS"
        case .cancel: return "CANCEL"
        case .retry: return "RETRY"
        case .fetch: return "FETCH"
        case .events: return "EVENTS"
        case .setPriority: return "SET-PRIORITY"
        case .gc: return "GC"
        }
    }

    struct ChunkHeader: Codable { var id: String; var offset: Int64 }
    struct IDHeader: Codable { var id: String }

    package func encode(requestID: UInt64) -> [[UInt8]] {
        var frames: [[UInt8]] = [Array(ProtocolName.control.utf8), requestIDFrame(requestID), Array(command.utf8)]
        switch self {
        case .hello, .workers: frames.append(Wire.header(Empty()))
        case .uploadBegin(let b): frames.append(Wire.header(b))
        case .uploadChunk(let id, let offset, let data):
            frames.append(Wire.header(ChunkHeader(id: id, offset: offset)))
            frames.append(data)
        case .uploadEnd(let id): frames.append(Wire.header(IDHeader(id: id)))
        case .submit(let s): frames.append(Wire.header(s))
        case .status(let j), .cancel(let j), .retry(let j): frames.append(Wire.header(JobRef(job: j)))
        case .jobs(let q): frames.append(Wire.header(q))
        case .fetch(let f): frames.append(Wire.header(f))
        case .events(let q): frames.append(Wire.header(q))
        case .setPriority(let p): frames.append(Wire.header(p))
        case .gc(let g): frames.append(Wire.header(g))
        }
        return frames
    }

    /// Parses a request (without the ROUTER identity frame).
    package static func decode<C: Collection>(_ frames: C, limits: ProtocolLimits = .default) throws -> (UInt64, ControlRequest)
    where C.Element == [UInt8] {
        let f = Array(frames)
        try limits.checkSize(f, "request")
        guard f.count >= 4 else { throw DubfarmError(.protocolViolation, "request of \(f.count) frames is too short") }
        guard f[0] == Array(ProtocolName.control.utf8) else {
            throw DubfarmError(.protocolViolation, "unknown protocol '\(Wire.string(f[0]) ?? "<binary>")' (expected \(ProtocolName.control))")
        }
        let id = try parseRequestID(f[1])
        guard let command = Wire.string(f[2]) else { throw DubfarmError(.protocolViolation, "unreadable command frame") }
        let expected = command == "UPLOAD-CHUNK" ? 5 : 4
        guard f.count == expected else { throw DubfarmError(.protocolViolation, "\(command): \(f.count) frames, expected \(expected)") }
        if f.count == 5, f[4].count > limits.maxPayloadBytes {
            throw DubfarmError(.protocolViolation, "\(command): payload exceeds \(limits.maxPayloadBytes) bytes")
        }
        func header<T: Decodable>(_ t: T.Type) throws -> T { try Wire.decodeHeader(t, f[3], command: command, limits: limits) }
        let request: ControlRequest
        switch command {
        case "HELLO": _ = try header(Empty.self); request = .hello
        case "UPLOAD-BEGIN": request = .uploadBegin(try header(UploadBegin.self))
        case "UPLOAD-CHUNK":
            let h = try header(ChunkHeader.self)
            request = .uploadChunk(id: h.id, offset: h.offset, data: f[4])
        case "UPLOAD-END": request = .uploadEnd(id: try header(IDHeader.self).id)
        case "SUBMIT": request = .submit(try header(SubmitSpec.self))
        case "STATUS": request = .status(job: try header(JobRef.self).job)
        case "JOBS": request = .jobs(try header(JobsQuery.self))
        case "WORKERS": _ = try header(Empty.self); request = .workers
        case "CANCEL": request = .cancel(job: try header(JobRef.self).job)
        case "RETRY": request = .retry(job: try header(JobRef.self).job)
        case "FETCH": request = .fetch(try header(FetchRequest.self))
        case "EVENTS": request = .events(try header(EventsQuery.self))
        case "SET-PRIORITY": request = .setPriority(try header(PriorityChange.self))
        case "GC": request = .gc(try header(GCRequest.self))
        default: throw DubfarmError(.protocolViolation, "unknown command '\(command)'")
        }
        return (id, request)
    }
}

/// The coordinator's answer to one ``ControlRequest``.
///
/// On the wire: `[DUBFARM-CTL/1, request id, OK|ERR, JSON header, payload?]`.
package struct ControlReply: Sendable, Hashable {
    package var requestID: UInt64
    package var outcome: Result<Body, DubfarmError>

    package struct Body: Sendable, Hashable {
        package var header: [UInt8]
        package var payload: [UInt8]?
    }
    struct ErrorHeader: Codable { var code: String; var message: String }

    /// A successful reply carrying `value` (and optional bytes).
    package static func ok<T: Encodable>(_ requestID: UInt64, _ value: T, payload: [UInt8]? = nil) -> ControlReply {
        ControlReply(requestID: requestID, outcome: .success(Body(header: Wire.header(value), payload: payload)))
    }
    package static func error(_ requestID: UInt64, _ error: DubfarmError) -> ControlReply {
        ControlReply(requestID: requestID, outcome: .failure(error))
    }

    /// The reply's value, or the coordinator's error.
    package func value<T: Decodable>(_ type: T.Type, limits: ProtocolLimits = .default) throws -> T {
        let body = try outcome.get()
        return try Wire.decodeHeader(type, body.header, command: "reply", limits: limits)
    }
    package var payload: [UInt8]? { try? outcome.get().payload }

    package func encode() -> [[UInt8]] {
        var frames: [[UInt8]] = [Array(ProtocolName.control.utf8), requestIDFrame(requestID)]
        switch outcome {
        case .success(let b):
            frames.append(Array("OK".utf8))
            frames.append(b.header)
            if let p = b.payload { frames.append(p) }
        case .failure(let e):
            frames.append(Array("ERR".utf8))
            frames.append(Wire.header(ErrorHeader(code: e.code.rawValue, message: e.message)))
        }
        return frames
    }

    package static func decode<C: Collection>(_ frames: C, limits: ProtocolLimits = .default) throws -> ControlReply
    where C.Element == [UInt8] {
        let f = Array(frames)
        try limits.checkSize(f, "reply")
        guard f.count == 4 || f.count == 5, f[0] == Array(ProtocolName.control.utf8) else {
            throw DubfarmError(.protocolViolation, "malformed reply from coordinator")
        }
        let id = try parseRequestID(f[1])
        switch Wire.string(f[2]) {
        case "OK":
            return ControlReply(requestID: id, outcome: .success(Body(header: f[3], payload: f.count == 5 ? f[4] : nil)))
        case "ERR":
            let h = try Wire.decodeHeader(ErrorHeader.self, f[3], command: "reply", limits: limits)
            return ControlReply(requestID: id, outcome: .failure(DubfarmError(DubfarmError.Code(rawValue: h.code) ?? .internalError, h.message)))
        default:
            throw DubfarmError(.protocolViolation, "malformed reply status")
        }
    }
}

func requestIDFrame(_ id: UInt64) -> [UInt8] {
    var w = ByteWriter(capacity: 8)
    w.u64(id)
    return w.bytes
}

func parseRequestID(_ frame: [UInt8]) throws -> UInt64 {
    guard frame.count == 8 else { throw DubfarmError(.protocolViolation, "request id must be 8 bytes, got \(frame.count)") }
    var r = ByteReader(frame)
    return try r.u64()
}
