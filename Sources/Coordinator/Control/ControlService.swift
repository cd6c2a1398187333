import Crypto
import DubfarmCore
import FarmConfig
import FarmProtocol
import FarmStore
import Foundation
import Logging
import MediaPipeline
import Monitoring

/// Answers the CLI on the control endpoint: uploads, submissions, queries, cancel and retry,
/// downloads. Runs on its own thread with its own database connection, so a client flooding the
/// control endpoint never stalls dispatch to workers.
actor ControlService {
    let executor = ThreadExecutor(name: "control")
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    let config: FarmConfiguration
    let store: FarmStore
    let media: MediaStore
    let dispatcher: Dispatcher
    let pipeline: JobPipeline
    let endpoint: RouterEndpoint
    let logger: Logger
    let name: String
    static let chunkSize = 1 << 20

    /// An upload being received into `blobs/SHA.part`, keyed by its SHA-256.
    final class Upload {
        let id: String
        let name: String
        let size: Int64
        let handle: FileHandle
        var received: Int64
        var hasher: SHA256
        var lastActivity = ContinuousClock.now
        init(id: String, name: String, size: Int64, handle: FileHandle, received: Int64, hasher: SHA256) {
            self.id = id
            self.name = name
            self.size = size
            self.handle = handle
            self.received = received
            self.hasher = hasher
        }
    }
    var uploads: [String: Upload] = [:]

    init(config: FarmConfiguration, store: FarmStore, media: MediaStore, dispatcher: Dispatcher, pipeline: JobPipeline,
         endpoint: RouterEndpoint, name: String, logger: Logger) {
        self.config = config
        self.store = store
        self.media = media
        self.dispatcher = dispatcher
        self.pipeline = pipeline
        self.endpoint = endpoint
        self.name = name
        self.logger = logger
    }

    /// The answer to a request refused because the control queue is full: an error the client
    /// shows ("busy, try again"), or nothing when the request id is unreadable.
    static func busyReply(_ frames: [[UInt8]]) -> [[UInt8]]? {
        guard frames.count >= 2, frames[1].count == 8 else { return nil }
        var r = ByteReader(frames[1])
        guard let id = try? r.u64() else { return nil }
        return ControlReply.error(id, DubfarmError(.timeout, "the coordinator is busy (too many control requests queued); try again")).encode()
    }

    func receive(_ inbound: RouterEndpoint.Inbound) async {
        let requestID: UInt64
        let request: ControlRequest
        do {
            (requestID, request) = try ControlRequest.decode(inbound.frames, limits: config.limits)
        } catch {
            logger.warning("dropped a malformed control request: \(error)")
            // Answer when the request id is readable, so the client is not left waiting.
            if inbound.frames.count >= 2, inbound.frames[1].count == 8 {
                var r = ByteReader(inbound.frames[1])
                if let id = try? r.u64() {
                    let e = error as? DubfarmError ?? DubfarmError(.protocolViolation, "\(error)")
                    endpoint.send(to: inbound.identity, ControlReply.error(id, e).encode())
                }
            }
            return
        }
        let reply: ControlReply
        do {
            reply = try await handle(request, id: requestID)
        } catch let e as DubfarmError {
            reply = .error(requestID, e)
        } catch {
            reply = .error(requestID, DubfarmError(.internalError, "\(error)"))
        }
        endpoint.send(to: inbound.identity, reply.encode())
    }

    private func handle(_ request: ControlRequest, id: UInt64) async throws -> ControlReply {
        switch request {
        case .hello:
            return .ok(id, ServerHello(version: DubfarmVersion.current, maxUploadBytes: config.maxUploadBytes))
        case .uploadBegin(let b):
            return .ok(id, try beginUpload(b))
        case .uploadChunk(let uid, let offset, let data):
            return .ok(id, try chunk(uid, offset: offset, data: data))
        case .uploadEnd(let uid):
            return .ok(id, try endUpload(uid))
        case .submit(let spec):
            return .ok(id, try await submit(spec))
        case .status(let job):
            return .ok(id, try await detail(job))
        case .jobs(let q):
            return .ok(id, try await jobViews(state: q.state, labels: q.labels ?? [:], name: q.name, limit: q.limit))
        case .workers:
            return .ok(id, await dispatcher.workerViews())
        case .cancel(let job):
            return .ok(id, try await cancel(job, actor: "cli"))
        case .retry(let job):
            return .ok(id, try await retry(job, actor: "cli"))
        case .fetch(let f):
            do { return try fetch(f, id: id) } catch let e as DubfarmError where e.code == .notFound {
                guard let job = try await store.job(JobID(f.job)) else { throw notFound(f.job) }
                if let removed = job.mediaRemovedAt {
                    throw DubfarmError(.notFound, "job \(f.job)'s output was removed by gc on \(ISO8601DateFormatter().string(from: removed)); submit it again")
                }
                throw e
            }
        case .events(let q):
            let events = try await store.events(job: q.job.map { JobID($0) }, afterID: q.after, limit: min(max(q.limit, 1), 10_000))
            return .ok(id, events.map(Self.eventView))
        case .setPriority(let p):
            return .ok(id, try await setPriority(p.job, p.priority, actor: "cli"))
        case .gc(let g):
            guard g.olderThanSeconds >= 0, g.olderThanSeconds.isFinite else {
                throw DubfarmError(.badInput, "gc: --older-than must be zero or more")
            }
            return .ok(id, try await collectGarbage(olderThan: g.olderThanSeconds, dryRun: g.dryRun))
        }
    }

    // MARK: Jobs (the CLI's and the dashboard's)

    /// A job with its segments, as `dubfarm status` shows it.
    func detail(_ job: Int64) async throws -> JobDetail {
        guard let rec = try await store.job(JobID(job)) else { throw notFound(job) }
        let segments = try await store.segments(job: rec.id)
        let results = try await store.results(job: rec.id)
        let inflight = await dispatcher.inFlight()
        let segViews = segments.map { s in
            SegmentView(index: s.ref.index, startFrame: s.frames.lowerBound, endFrame: s.frames.upperBound, state: s.state,
                        worker: s.leasedBy, leases: s.leases, failures: s.failures,
                        framesDone: s.state == .done ? s.frames.count : (inflight[s.ref] ?? s.framesDone),
                        error: s.error, processSeconds: s.processSeconds, stats: results[s.ref.index]?.stats ?? nil)
        }
        var view = jobView(rec)
        view.framesDone = segViews.reduce(0) { $0 + $1.framesDone }
        view.waitingFor = Self.waitingFor(view, workers: await dispatcher.capabilities())
        if let p = try await store.personalisation(job: rec.id) { view.personalisation = Self.personalisationView(p) }
        return JobDetail(job: view, segments: segViews)
    }

    /// Cancels a job; its running segments stop and their workers are freed.
    func cancel(_ job: Int64, actor: String) async throws -> JobView {
        guard try await store.job(JobID(job)) != nil else { throw notFound(job) }
        let leases = try await store.cancelJob(JobID(job), reason: "cancelled by \(actor == "cli" ? "user" : actor)", actor: actor)
        await dispatcher.cancel(leases)
        await dispatcher.forget(job: JobID(job))
        logger.info("job cancelled", metadata: ["job": .stringConvertible(job), "by": .string(actor)])
        return jobView(try await store.job(JobID(job))!)
    }

    /// Puts a failed or cancelled job back in the queue; finished segments are kept.
    func retry(_ job: Int64, actor: String) async throws -> JobView {
        guard let before = try await store.job(JobID(job)) else { throw notFound(job) }
        if before.mediaRemovedAt != nil {
            throw DubfarmError(.badInput, "job \(job)'s files were removed by gc; submit it again")
        }
        let rec = try await store.retryJob(JobID(job), actor: actor)
        // A job that failed in its stitch (a full disk) has every segment done: nothing will
        // complete to start the stitch, so ask for it here.
        if rec.state == .running, let counts = try await store.job(JobID(job))?.segments, counts.total > 0, counts.done == counts.total {
            await pipeline.stitchWhenReady(JobID(job))
        }
        await pipeline.nudge()
        await dispatcher.dispatchAll()
        logger.info("job retried", metadata: ["job": .stringConvertible(job), "by": .string(actor)])
        return jobView(rec)
    }

    /// Changes a job's priority.
    func setPriority(_ job: Int64, _ priority: Int, actor: String) async throws -> JobView {
        guard try await store.job(JobID(job)) != nil else { throw notFound(job) }
        guard (-1_000_000...1_000_000).contains(priority) else {
            throw DubfarmError(.badInput, "priority \(priority) is outside -1000000…1000000")
        }
        let rec = try await store.setJobPriority(JobID(job), priority, actor: actor)
        await dispatcher.dispatchAll()
        logger.info("job priority changed", metadata: ["job": .stringConvertible(job), "priority": .stringConvertible(priority), "by": .string(actor)])
        return jobView(rec)
    }

    private func notFound(_ job: Int64) -> DubfarmError {
        DubfarmError(.notFound, "job \(job) does not exist (see `dubfarm jobs`)")
    }

    func jobView(_ r: JobRecord) -> JobView {
        var v = JobView(id: r.id.rawValue, state: r.state, priority: r.priority, createdAt: r.createdAt, updatedAt: r.updatedAt,
                        video: r.videoName, audio: r.audioName, face: r.faceName, stage: r.params.options["stage"] ?? config.defaultStage)
        v.startedAt = r.startedAt
        v.finishedAt = r.finishedAt
        v.frames = r.frameCount
        v.frameRate = r.frameRate?.description
        v.width = r.width
        v.height = r.height
        if let c = r.segments {
            v.segments.total = c.total
            v.segments.pending = c.pending
            v.segments.leased = c.leased
            v.segments.done = c.done
            v.segments.dead = c.dead
            v.segments.cancelled = c.cancelled
        }
        v.audioFit = r.audioFit?.description
        v.outputBytes = r.outputBytes
        v.errorCode = r.errorCode?.rawValue
        v.error = r.error
        v.model = r.params.options["model"]
        v.weights = r.weights
        v.name = r.name
        v.labels = r.labels.isEmpty ? nil : r.labels
        v.mediaRemovedAt = r.mediaRemovedAt
        return v
    }

    /// The view of a personalisation record.
    static func personalisationView(_ p: PersonalisationRecord) -> PersonalisationView {
        var v = PersonalisationView(state: p.state.rawValue, budgetSeconds: p.budgetSeconds, fallback: p.machine.fallback,
                                    elapsedSeconds: p.elapsedSeconds, step: p.step, leases: p.machine.leases, failures: p.machine.failures)
        v.loss = p.loss
        v.worker = p.machine.leasedBy
        v.checkpointStep = p.machine.checkpointStep
        v.resumedFrom = p.resumedFrom
        v.datasetFrames = p.datasetFrames
        v.weights = p.weights
        v.report = p.report
        v.error = p.error
        v.workers = p.workers
        v.worldSize = p.worldSize
        return v
    }

    /// Why the job's pending segments wait, if no connected worker can take them.
    static func waitingFor(_ v: JobView, workers: [WorkerCapabilities]) -> String? {
        guard v.state == .running, v.segments.pending > 0 else { return nil }
        return waitingReason(stage: v.stage, model: v.model, workers: workers)
    }

    // MARK: Uploads

    /// Starts or resumes the upload of the file with SHA-256 `b.sha256`: nothing to send when
    /// the store has it already, the rest when an earlier upload of it was cut off.
    private func beginUpload(_ b: UploadBegin) throws -> UploadStarted {
        guard b.size >= 0 else { throw DubfarmError(.badInput, "\(b.name): negative size") }
        guard b.size <= config.maxUploadBytes else {
            throw DubfarmError(.badInput, "\(b.name): \(b.size) bytes exceeds the coordinator's upload limit of \(config.maxUploadBytes) bytes (media.max_upload_bytes)")
        }
        let sha = b.sha256.lowercased()
        guard MediaStore.isContentID(sha) else {
            throw DubfarmError(.badInput, "\(b.name): the checksum must be 64 hex digits of SHA-256")
        }
        let blob = media.uploadDone(sha)
        if media.isStoreFile(blob) {
            let have = Self.fileSize(blob)
            guard have == b.size else {
                throw DubfarmError(.badInput, "\(b.name): the farm holds a file with this SHA-256 of \(have ?? 0) bytes, not \(b.size)")
            }
            // gc counts a file's age from its last use.
            try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: blob.path)
            FarmMetrics.shared.uploadReused(bytes: b.size)
            return UploadStarted(id: sha, chunkSize: Self.chunkSize, received: b.size, complete: true)
        }
        expireIdleUploads()
        if let u = uploads[sha] {
            guard u.size == b.size else { throw DubfarmError(.badInput, "\(b.name): an upload of this file with another size (\(u.size) bytes) is under way") }
            u.lastActivity = .now
            return UploadStarted(id: sha, chunkSize: Self.chunkSize, received: u.received)
        }
        // A part left by a cut-off upload (by this coordinator or one before it): go on from its end.
        let part = media.uploadPart(sha)
        var hasher = SHA256()
        var received: Int64 = 0
        if media.isStoreFile(part), let existing = Self.fileSize(part), existing <= b.size, let r = try? FileHandle(forReadingFrom: part) {
            defer { try? r.close() }
            while let chunk = try? r.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
            received = existing
        } else {
            try? FileManager.default.removeItem(at: part)
            guard FileManager.default.createFile(atPath: part.path, contents: nil) else {
                throw DubfarmError(.io, "the coordinator cannot create an upload file in its media store")
            }
        }
        guard let h = try? FileHandle(forWritingTo: part), (try? h.seekToEnd()) == UInt64(received) else {
            throw DubfarmError(.io, "the coordinator cannot open an upload file in its media store")
        }
        if received > 0 {
            logger.info("resuming a cut-off upload", metadata: ["file": .string(b.name), "received": .stringConvertible(received), "size": .stringConvertible(b.size)])
        }
        uploads[sha] = Upload(id: sha, name: b.name, size: b.size, handle: h, received: received, hasher: hasher)
        return UploadStarted(id: sha, chunkSize: Self.chunkSize, received: received)
    }

    static func fileSize(_ url: URL) -> Int64? {
        (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? NSNumber)?.int64Value
    }

    private func upload(_ uid: String) throws -> Upload {
        guard MediaStore.isValidUploadID(uid), let u = uploads[uid] else {
            throw DubfarmError(.notFound, "upload \(uid.prefix(40)) is unknown or expired; start it again")
        }
        return u
    }

    /// Stores a chunk at `offset`. Bytes the coordinator holds already (a chunk sent again after
    /// a reconnect, or by a second client uploading the same file) are acknowledged, not written.
    private func chunk(_ uid: String, offset: Int64, data: [UInt8]) throws -> UploadStatus {
        let u = try upload(uid)
        let end = offset + Int64(data.count)
        guard offset >= 0, offset <= u.received else {
            throw DubfarmError(.badInput, "\(u.name): chunk at offset \(offset), but only \(u.received) bytes are stored")
        }
        guard end <= u.size else {
            // The client's idea of the file is wrong: nothing it sent can be trusted.
            abort(u)
            throw DubfarmError(.badInput, "\(u.name): more bytes than the announced \(u.size)")
        }
        if end > u.received {
            let fresh = data[Int(u.received - offset)...]
            do { try u.handle.write(contentsOf: fresh) } catch {
                abort(u)
                throw DubfarmError(.diskFull, "\(u.name): the coordinator could not store the upload: \(error.localizedDescription)")
            }
            u.hasher.update(data: fresh)
            u.received = end
            FarmMetrics.shared.uploaded(bytes: fresh.count)
        }
        u.lastActivity = .now
        return UploadStatus(id: uid, received: u.received)
    }

    private func endUpload(_ uid: String) throws -> UploadStatus {
        let u = try upload(uid)
        defer { uploads[uid] = nil }
        guard u.received == u.size else {
            throw DubfarmError(.badInput, "\(u.name): received \(u.received) of \(u.size) bytes")
        }
        let digest = u.hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard digest == u.id else {
            abort(u)
            throw DubfarmError(.badInput, "\(u.name): checksum mismatch (the upload was corrupted in transit); submit again")
        }
        do {
            try u.handle.synchronize()
            try u.handle.close()
            let blob = media.uploadDone(uid)
            if media.isStoreFile(blob) {
                try? FileManager.default.removeItem(at: media.uploadPart(uid))
            } else {
                try FileManager.default.moveItem(at: media.uploadPart(uid), to: blob)
                MediaStore.syncDirectory(blob.deletingLastPathComponent())
            }
        } catch {
            abort(u)
            throw DubfarmError(.io, "\(u.name): the coordinator could not finish the upload: \(error.localizedDescription)")
        }
        return UploadStatus(id: uid, received: u.received, sha256: digest)
    }

    /// Drops an upload whose bytes cannot be trusted or stored.
    private func abort(_ u: Upload) {
        try? u.handle.close()
        try? FileManager.default.removeItem(at: media.uploadPart(u.id))
        uploads[u.id] = nil
    }

    /// Closes uploads idle for an hour; their parts stay on disk, so the client can resume
    /// them (gc removes them once they are older than its age).
    private func expireIdleUploads() {
        for u in uploads.values where ContinuousClock.now - u.lastActivity > .seconds(3600) {
            try? u.handle.close()
            uploads[u.id] = nil
        }
    }

    // MARK: Garbage collection

    /// `dubfarm gc` (and `media.retention_hours`): removes the files of jobs finished more than
    /// `olderThan` seconds ago, the uploads no unfinished job needs that were last used that long
    /// ago, and cut-off uploads as old. Never a file an unfinished job or an upload under way uses.
    func collectGarbage(olderThan: Double, dryRun: Bool) async throws -> GCReport {
        let cutoff = Date().addingTimeInterval(-olderThan)
        var report = GCReport(dryRun: dryRun)
        for job in try await store.finishedJobsWithMedia(endedBefore: cutoff) {
            let dir = media.jobDir(job.id)
            let bytes = MediaRetention.bytes(under: dir)
            if !dryRun {
                guard try await store.markMediaRemoved(job.id, actor: name) else { continue }
                try? FileManager.default.removeItem(at: dir)
            }
            report.jobs.append(job.id.rawValue)
            report.bytes += bytes
        }
        let live = try await store.uploadsOfLiveJobs()
        let active = Set(uploads.keys)
        for file in MediaRetention.uploadFiles(media) where file.modified < cutoff && !live.contains(file.id) && !active.contains(file.id) {
            if !dryRun { guard (try? FileManager.default.removeItem(at: file.url)) != nil else { continue } }
            if file.partial { report.partialUploads += 1 } else { report.uploads += 1 }
            report.bytes += file.bytes
        }
        // Kept plans of videos no unfinished job uses (their files are hard links: jobs keep theirs).
        for plan in MediaRetention.planDirectories(media) where plan.modified < cutoff && !(plan.video.map(live.contains) ?? false) {
            let bytes = MediaRetention.bytes(under: plan.url)
            if !dryRun { guard (try? FileManager.default.removeItem(at: plan.url)) != nil else { continue } }
            report.bytes += bytes
        }
        if !dryRun && (!report.jobs.isEmpty || report.uploads + report.partialUploads > 0) {
            logger.notice("gc removed the files of \(report.jobs.count) finished job(s) and \(report.uploads + report.partialUploads) upload(s): \(report.bytes) bytes")
        }
        return report
    }

    // MARK: Submit

    private func submit(_ spec: SubmitSpec) async throws -> JobView {
        func done(_ uid: String, _ what: String) throws -> URL {
            // The id is checked before it touches a path; the file must be a regular file of the
            // store's own (a symbolic link planted in the store is refused, wherever it points).
            guard MediaStore.isValidUploadID(uid), media.isStoreFile(media.uploadDone(uid)) else {
                throw DubfarmError(.badInput, "the \(what) upload \(uid.prefix(40)) is not finished or does not exist")
            }
            return media.uploadDone(uid)
        }
        let video = try done(spec.video, "video")
        let audio = try done(spec.audio, "audio")
        let face = try spec.face.map { try done($0, "face") }
        let names = try uploadNames(spec)
        let stage = spec.stage ?? config.defaultStage
        guard StageCatalog.stage(stage) != nil else {
            throw DubfarmError(.badInput, "unknown stage '\(stage)' (\(StageCatalog.namesInWords))")
        }
        var params = JobParams(encoder: config.encoder, segmentSeconds: config.segmentSeconds)
        params.options["upload.video"] = spec.video
        params.options["upload.audio"] = spec.audio
        if let f = spec.face { params.options["upload.face"] = f }
        if let m = spec.model {
            guard (1...128).contains(m.count), m.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._@:-".contains($0)) }) else {
                throw DubfarmError(.badInput, "model '\(m.prefix(40))' is not a model id (letters, digits and ._@:- only, at most 128)")
            }
            params.options["model"] = m
        }
        params.options["stage"] = stage
        if let p = spec.personalise {
            if p.seconds == 0 {
                params.options[PersonaliseRequest.secondsOption] = "0"
            } else {
                guard (1...PersonaliseRequest.maxSeconds).contains(p.seconds) else {
                    throw DubfarmError(.badInput, "--personalise: \(p.seconds) s is not a budget in 1…\(PersonaliseRequest.maxSeconds) seconds")
                }
                guard StageCatalog.stage(stage)?.usesAudio ?? false else {
                    throw DubfarmError(.badInput, "--personalise fine-tunes the dub model; the '\(stage)' stage runs none")
                }
                p.store(in: &params.options)
            }
        }
        if let n = spec.name { try JobLabels.checkName(n) }
        try JobLabels.check(spec.labels ?? [:])
        let new = NewJob(videoName: names.video, audioName: names.audio, faceName: names.face, priority: spec.priority,
                         params: params, submittedBy: "cli", name: spec.name, labels: spec.labels ?? [:])

        // Check the inputs now, so the user hears about a bad file at once.
        let pixelFormat = config.encoder.pixelFormat
        let check: DubfarmError? = try await runBlocking("check inputs") {
            do {
                let v = try naming(video, as: names.video) { try MediaProbe.probe(path: video.path, requireVideo: true) }
                guard let vs = v.video, vs.frameCount > 0 else {
                    throw DubfarmError(.badInput, "\(names.video): the video stream has no frames")
                }
                let a = try naming(audio, as: names.audio) { try MediaProbe.probe(path: audio.path, requireVideo: false) }
                guard let at = a.audio else { throw DubfarmError(.badInput, "\(names.audio): no audio stream (the dub track must be audio)") }
                if let seconds = at.duration, seconds <= 0 {
                    throw DubfarmError(.badInput, "\(names.audio): the audio track is empty (0 seconds of sound)")
                }
                // What the workers' encoder would refuse on every segment, refused once here.
                if pixelFormat.contains("420") && (vs.width % 2 != 0 || vs.height % 2 != 0) {
                    throw DubfarmError(.badInput, "\(names.video): the picture is \(vs.width)x\(vs.height); the \(pixelFormat) output needs an even width and height")
                }
                if let face, let fname = names.face {
                    _ = try naming(face, as: fname) { try ImageLoader.load(path: face.path) }
                }
                return nil
            } catch let e as DubfarmError {
                return e
            }
        }
        let record = try await store.createJob(new, actor: "cli")
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(record.id)
        if let check {
            _ = try await store.failJob(record.id, code: check.code, message: check.message, actor: name)
            // Uploads of older coordinators belonged to this job alone; content-addressed ones
            // may serve other jobs (gc removes them once unused).
            for (uid, u) in [(spec.video, video), (spec.audio, audio)] + (face.map { [(spec.face!, $0)] } ?? [])
            where !MediaStore.isContentID(uid) { try? FileManager.default.removeItem(at: u) }
            log.warning("job refused: \(check.message)")
            throw DubfarmError(check.code, "\(check.message) (job \(record.id) failed)")
        }
        log.info("job submitted", metadata: ["video": .string(names.video), "priority": .stringConvertible(spec.priority), "stage": .string(stage)])
        await pipeline.nudge()
        return jobView(record)
    }

    /// Display names: the last path component, printable, bounded. They never become paths.
    private func uploadNames(_ spec: SubmitSpec) throws -> (video: String, audio: String, face: String?) {
        func clean(_ s: String, _ fallback: String) -> String {
            let last = s.split(separator: "/").last.map(String.init) ?? s
            let printable = String(last.unicodeScalars.filter { !CharacterSet.controlCharacters.contains($0) }.map(Character.init))
            return printable.isEmpty ? fallback : String(printable.prefix(200))
        }
        return (clean(spec.videoName, "video"), clean(spec.audioName, "audio"), spec.faceName.map { clean($0, "face") })
    }

    // MARK: Fetch

    private func fetch(_ f: FetchRequest, id: UInt64) throws -> ControlReply {
        let out = media.output(JobID(f.job))
        guard media.isStoreFile(out),
              let sum = try? String(contentsOf: media.outputChecksum(JobID(f.job)), encoding: .utf8) else {
            throw DubfarmError(.notFound, "job \(f.job) has no output (is it done? see `dubfarm status \(f.job)`)")
        }
        guard let h = try? FileHandle(forReadingFrom: out) else { throw DubfarmError(.io, "cannot read the output of job \(f.job)") }
        defer { try? h.close() }
        let total = Int64(try h.seekToEnd())
        guard f.offset >= 0, f.offset <= total else { throw DubfarmError(.badInput, "offset \(f.offset) is outside the output (\(total) bytes)") }
        try h.seek(toOffset: UInt64(f.offset))
        let data = try h.read(upToCount: min(max(f.length, 1), 16 << 20)) ?? Data()
        return .ok(id, FetchChunk(total: total, offset: f.offset, sha256: sum), payload: Array(data))
    }
}
