import Crypto
import DubfarmCore
import DurableFiles
import FarmConfig
import FarmStore
import Foundation
import Logging
import MediaPipeline
import Monitoring

/// Plans queued jobs (probe, index, cut plan, dub PCM) and stitches finished ones, off the socket
/// loops. Both steps are idempotent: a coordinator killed mid-step redoes the step from its start.
actor JobPipeline {
    let config: FarmConfiguration
    let store: FarmStore
    let media: MediaStore
    let logger: Logger
    let name: String
    let onPlanned: @Sendable (JobID) -> Void
    let datasetBuilder: PersonalisationDatasetBuilder?
    /// Jobs whose personalisation dataset this coordinator is building.
    var preparing: Set<JobID> = []
    var stitchQueue: [JobID] = []
    var stitching: Set<JobID> = []
    var wakeup: AsyncStream<Void>.Continuation?

    init(config: FarmConfiguration, store: FarmStore, media: MediaStore, name: String, logger: Logger,
         datasetBuilder: PersonalisationDatasetBuilder? = nil, onPlanned: @escaping @Sendable (JobID) -> Void) {
        self.datasetBuilder = datasetBuilder
        self.config = config
        self.store = store
        self.media = media
        self.name = name
        self.logger = logger
        self.onPlanned = onPlanned
    }

    /// Asks for a stitch of `job` (all its segments are done).
    func stitchWhenReady(_ job: JobID) {
        if !stitchQueue.contains(job) && !stitching.contains(job) { stitchQueue.append(job) }
        wakeup?.yield()
    }

    func nudge() { wakeup?.yield() }

    /// Runs until cancelled: plans queued jobs one at a time and stitches finished ones.
    func run() async {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        wakeup = continuation
        do {
            let report = try await store.jobsToResume(actor: name)
            if !report.requeued.isEmpty { logger.notice("re-planning jobs interrupted while planning: \(report.requeued.map(\.description).joined(separator: ", "))") }
            for j in report.stitching + report.readyToStitch { stitchWhenReady(j.id) }
        } catch {
            logger.error("could not read jobs to resume: \(error)")
        }
        // Poll as a backstop; wake-ups make it prompt.
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(500))
                continuation.yield()
            }
        }
        defer { ticker.cancel() }
        for await _ in stream {
            if Task.isCancelled { break }
            while let job = stitchQueue.first {
                stitchQueue.removeFirst()
                await stitch(job)
            }
            // Personalisations waiting for their dataset (planned just now, retried, or left by
            // a coordinator that stopped while building one).
            if let waiting = try? await store.personalisationsToPrepare() {
                for job in waiting where !preparing.contains(job) && !Task.isCancelled { await prepare(job) }
            }
            while !Task.isCancelled {
                let job: JobRecord?
                do { job = try await store.claimQueuedJob(actor: name) } catch {
                    logger.error("could not take a queued job: \(error)")
                    break
                }
                guard let job else { break }
                await plan(job)
            }
        }
    }

    // MARK: Planning

    private func plan(_ job: JobRecord) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(job.id)
        log.info("planning", metadata: ["video": .string(job.videoName)])
        let config = self.config
        let media = self.media
        let started = ContinuousClock.now
        do {
            let planLog = log
            let plan = try await runBlocking("plan \(job.id)") { try Self.makePlan(job, config: config, media: media, logger: planLog) }
            let personalise = try Self.personaliseRequest(job, config: config)
            let saved = try await store.savePlan(job: job.id, plan: plan, personalise: personalise, actor: name)
            log.info("planned", metadata: ["segments": .stringConvertible(plan.spans.count), "frames": .stringConvertible(plan.frameCount),
                                           "fps": .stringConvertible(plan.frameRate), "seconds": .string(String(format: "%.2f", (ContinuousClock.now - started).seconds))])
            if saved.state == .personalising {
                await prepare(job.id)
            } else {
                onPlanned(job.id)
            }
        } catch {
            let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
            log.error("planning failed: \(e.message)")
            _ = try? await store.failJob(job.id, code: e.code, message: e.message, actor: name)
        }
    }

    /// What the job asks of personalisation: its own `--personalise`, else the coordinator's
    /// `personalise.default_seconds` (such jobs fall back to the default weights if it fails).
    static func personaliseRequest(_ job: JobRecord, config: FarmConfiguration) throws -> PersonaliseRequest? {
        if job.params.options[PersonaliseRequest.secondsOption] != nil { return try PersonaliseRequest(options: job.params.options) }
        return config.personaliseDefaultSeconds > 0 ? PersonaliseRequest(seconds: config.personaliseDefaultSeconds, fallback: true) : nil
    }

    // MARK: Personalisation

    /// Builds job `id`'s personalisation dataset from its video (the dub stage's own crops and
    /// the clip's own audio: `dubfarm dataset build`), then lets the fine-tune be leased. When
    /// that is impossible (no face, no audio track) the job falls back or fails, as it asked.
    private func prepare(_ id: JobID) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(id)
        preparing.insert(id)
        defer { preparing.remove(id) }
        let media = self.media, config = self.config
        let started = ContinuousClock.now
        do {
            guard let builder = datasetBuilder else {
                throw DubfarmError(.unsupported, "this coordinator cannot build personalisation datasets")
            }
            try? await store.setJobStage(id, "personalising: building the dataset")
            log.info("building the personalisation dataset", metadata: ["max_frames": .stringConvertible(config.personaliseMaxFrames)])
            let frames = try await runBlocking("personalisation dataset \(id)") { () throws -> Int in
                let final = media.personaliseDataset(id)
                let staging = final.deletingLastPathComponent().appendingPathComponent("data.building")
                try? FileManager.default.removeItem(at: staging)
                try FileManager.default.createDirectory(at: final.deletingLastPathComponent(), withIntermediateDirectories: true)
                let n = try builder(media.video(id), staging, config.personaliseMaxFrames, config.personaliseModelConfig)
                try? FileManager.default.removeItem(at: final)
                try FileManager.default.moveItem(at: staging, to: final)
                MediaStore.syncDirectory(final.deletingLastPathComponent())
                return n
            }
            guard frames >= Self.minimumPersonaliseFrames else {
                throw DubfarmError(.badInput, "only \(frames) frames of the first \(config.personaliseMaxFrames) show a face the tracker follows; "
                                   + "personalisation needs at least \(Self.minimumPersonaliseFrames)")
            }
            try await store.personalisationPrepared(job: id, frames: frames, actor: name)
            log.info("personalisation dataset built", metadata: [
                "frames": .stringConvertible(frames), "seconds": .string(String(format: "%.1f", (ContinuousClock.now - started).seconds))])
            onPlanned(id)
        } catch {
            let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
            let job = (try? await store.job(id))?.videoName ?? "the video"
            let reason = DubfarmError(e.code, "\(job): \(e.message)")
            log.error("personalisation dataset failed: \(reason.message)")
            let outcome = try? await store.personalisationUnprepared(job: id, error: reason, actor: name)
            if outcome == .fallBackToDefaultWeights { onPlanned(id) }
        }
    }

    /// Fewer frames with a face than this cannot be split into training and held-back parts.
    static let minimumPersonaliseFrames = 20

    /// Probe, index (re-cutting inputs with far-apart keyframes), decode the dub track once.
    static func makePlan(_ job: JobRecord, config: FarmConfiguration, media: MediaStore, logger: Logger) throws -> PlannedJob {
        try adoptUploads(job, media: media)
        // Another job of the same upload planned this video already (several dub tracks).
        let cache = PlanCache(media: media), key = PlanCache.key(segmentSeconds: job.params.segmentSeconds, config: config)
        let videoID = job.params.options["upload.video"].flatMap { MediaStore.isContentID($0) ? $0 : nil }
        if let videoID, let plan = cache.reuse(video: videoID, key: key, into: job.id) {
            logger.info("reusing the plan of the same video", metadata: ["video": .string(String(videoID.prefix(16)))])
            try writeDubPCM(job, media: media)
            return plan
        }
        let plan = try indexAndCut(job, config: config, media: media, logger: logger)
        if let videoID { cache.keep(plan, video: videoID, key: key, from: job.id) }
        try writeDubPCM(job, media: media)
        return plan
    }

    /// The job's dub track decoded once, as 16 kHz mono float samples for the workers.
    static func writeDubPCM(_ job: JobRecord, media: MediaStore) throws {
        let pcm = try naming(media.audio(job.id), as: job.audioName) { try DubAudio.decodePCM(path: media.audio(job.id).path) }
        try MediaStore.writeAtomically(pcm.rawBytes, to: media.dubPCM(job.id))
    }

    /// Indexes the job's video, re-cutting it first when its keyframes are too far apart.
    static func indexAndCut(_ job: JobRecord, config: FarmConfiguration, media: MediaStore, logger: Logger) throws -> PlannedJob {
        let videoPath = media.video(job.id).path
        var indexed = try naming(media.video(job.id), as: job.videoName) { try SourceIndexer.index(path: videoPath) }
        let info = indexed.info
        guard info.frameRate.num > 0, info.frameRate.den > 0 else {
            throw DubfarmError(.badInput, "\(job.videoName): the video has no usable frame rate")
        }
        let segmentFrames = SegmentPlanner.framesPerSegment(seconds: job.params.segmentSeconds, frameRate: info.frameRate)
        var spans = SegmentPlanner.plan(frameCount: indexed.index.frameCount, segmentFrames: segmentFrames)
        guard !spans.isEmpty else { throw DubfarmError(.badInput, "\(job.videoName): the video stream has no frames") }
        let recut = media.recut(job.id)
        var frameCount = info.frameCount
        let reason = RecutReason.decide(info: info, index: indexed.index, maxKeyframeSeconds: config.maxKeyframeInterval)
        if info.videoStreams > 1 {
            logger.notice("the file holds \(info.videoStreams) video streams: dubbing stream \(info.streamIndex), the default")
        }
        if let reason {
            // Re-encoded once, with a keyframe where each segment's decoding starts. Keyframes far
            // apart would make tasks carry long runs of reference packets. A variable frame rate
            // is re-timed on the source's own timeline at its nominal rate (a frame repeated or
            // dropped where the spacing differs): numbered at a constant rate as they are, its
            // frames would play faster or slower than recorded, and the dub track (recorded
            // against the real timing) would be cut to fit.
            let expected = RecutReason.frameCount(info, reason)
            let keys = SegmentPlanner.plan(frameCount: expected, segmentFrames: segmentFrames)
                .flatMap { [max(0, $0.frames.lowerBound - config.contextFrames), $0.frames.lowerBound] }
            logger.notice("re-cutting the input: \(reason) (\(info.frameCount) frames over \(String(format: "%.2f", info.timelineDuration)) s, \(expected) after)")
            try Recut.recut(input: videoPath, output: recut.path, frameRate: info.frameRate, keyframesAt: Array(Set(keys)).sorted(),
                            timing: reason.retimes ? .timestamps : .frameIndex)
            indexed = try naming(recut, as: job.videoName) { try SourceIndexer.index(path: recut.path) }
            if !reason.retimes && indexed.index.frameCount != info.frameCount {
                throw DubfarmError(.internalError, "\(job.videoName): re-cut produced \(indexed.index.frameCount) frames, expected \(info.frameCount)")
            }
            // The frames the re-cut holds: the input's, or its timeline at the nominal rate.
            frameCount = indexed.index.frameCount
            spans = SegmentPlanner.plan(frameCount: frameCount, segmentFrames: segmentFrames)
        } else {
            try? FileManager.default.removeItem(at: recut)
        }
        try MediaStore.writeAtomically(indexed.index.encoded(), to: media.packetIndex(job.id))
        try MediaStore.writeAtomically(indexed.codec.fileBytes(), to: media.codec(job.id))
        TestHooks.pause(TestHooks.planning, "planning", logger: logger)
        return PlannedJob(frameCount: frameCount, frameRate: info.frameRate, width: info.width, height: info.height,
                          rotation: info.rotation, segmentFrames: segmentFrames, spans: spans)
    }

    /// Links the job's finished uploads into its directory (idempotent: done on every planning
    /// attempt, a no-op once they are there).
    static func adoptUploads(_ job: JobRecord, media: MediaStore) throws {
        try FileManager.default.createDirectory(at: media.jobDir(job.id), withIntermediateDirectories: true)
        let wanted: [(String, URL, String)] = [("upload.video", media.video(job.id), job.videoName),
                                               ("upload.audio", media.audio(job.id), job.audioName),
                                               ("upload.face", media.face(job.id), job.faceName ?? "face")]
        for (key, dest, name) in wanted {
            guard let uid = job.params.options[key] else { continue }
            if FileManager.default.fileExists(atPath: dest.path) { continue }
            let src = media.uploadDone(uid)
            guard MediaStore.isValidUploadID(uid), FileManager.default.fileExists(atPath: src.path) else {
                throw DubfarmError(.notFound, "\(name): the uploaded file is missing from the media store")
            }
            if MediaStore.isContentID(uid) {
                // Shared with every job that uploaded the same file: a hard link (the job keeps
                // its inputs whatever gc does to the upload), a copy where links are refused.
                do { try FileManager.default.linkItem(at: src, to: dest) } catch {
                    let tmp = dest.appendingPathExtension("copying")
                    try? FileManager.default.removeItem(at: tmp)
                    try FileManager.default.copyItem(at: src, to: tmp)
                    try FileManager.default.moveItem(at: tmp, to: dest)
                }
            } else {
                try FileManager.default.moveItem(at: src, to: dest)
            }
        }
        MediaStore.syncDirectory(media.jobDir(job.id))
    }

    // MARK: Stitching

    private func stitch(_ id: JobID) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(id)
        stitching.insert(id)
        defer { stitching.remove(id) }
        do {
            guard let job = try await store.job(id) else { return }
            if job.state == .running { _ = try await store.markStitching(id, actor: name) }
            else if job.state != .stitching { return }
            let segments = try await store.segments(job: id)
            guard segments.allSatisfy({ $0.state == .done }), let frameCount = job.frameCount, let rate = job.frameRate else {
                throw DubfarmError(.internalError, "job \(id) reached stitching with unfinished segments")
            }
            var parts: [StitchSegment] = []
            let results = try await store.results(job: id)
            for s in segments {
                guard let result = results[s.ref.index], let token = result.token else {
                    throw DubfarmError(.internalError, "segment \(s.ref) is done but has no result recorded")
                }
                if let offset = result.offset, let bytes = result.bytes {
                    parts.append(StitchSegment(path: media.resultLog(id).path,
                                               record: ResultRecord(segment: s.ref.index, token: token, offset: offset, length: bytes)))
                } else {
                    // Stored by a coordinator of schema version 2: a file of its own.
                    parts.append(StitchSegment(path: media.segmentResult(s.ref, token: token).path))
                }
            }
            let request = StitchRequest(segments: parts, audioPath: media.audio(id).path, outputPath: media.output(id).path,
                                        expectedFrameCount: frameCount, frameRate: rate, rotation: job.rotation ?? 0,
                                        audioBitRate: config.audioBitrate)
            let media = self.media
            let stitchLog = log
            log.info("stitching", metadata: ["segments": .stringConvertible(parts.count)])
            let started = ContinuousClock.now
            let report = try await runBlocking("stitch \(id)") { () throws -> StitchReport in
                TestHooks.pause(TestHooks.stitching, "stitching", logger: stitchLog)
                let r = try Stitcher.stitch(request)
                try MediaStore.writeAtomically(Array(try sha256(of: media.output(id)).utf8), to: media.outputChecksum(id))
                return r
            }
            _ = try await store.finishJob(id, audioFit: report.audioFit ?? .exact, outputBytes: report.bytes, actor: name)
            FarmMetrics.shared.stitched(bytes: Int64(report.bytes))
            log.info("job done", metadata: ["frames": .stringConvertible(report.framesWritten), "audio": .string(report.audioFit?.description ?? "none"),
                                            "seconds": .string(String(format: "%.2f", (ContinuousClock.now - started).seconds))])
            // Segment results are no longer needed once the output is safely written.
            try? FileManager.default.removeItem(at: media.segmentsDir(id))
        } catch {
            let e = error as? DubfarmError ?? DubfarmError(.internalError, "\(error)")
            log.error("stitch failed: \(e.message)")
            _ = try? await store.failJob(id, code: e.code, message: "stitch failed: \(e.message)", actor: name)
        }
    }
}

/// Runs `body` on the media-store file `url`, and names the user's file (`name`) instead of the
/// store's internal path in any error it throws.
func naming<T>(_ url: URL, as name: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as DubfarmError {
        let msg = e.message.replacingOccurrences(of: url.path, with: name)
            .replacingOccurrences(of: "\(url.lastPathComponent):", with: "\(name):")
        throw DubfarmError(e.code, msg.hasPrefix(name) ? msg : "\(name): \(msg)")
    }
}

/// Hex SHA-256 of a file, streamed.
func sha256(of url: URL) throws -> String {
    guard let h = try? FileHandle(forReadingFrom: url) else { throw DubfarmError(.io, "cannot read \(url.path)") }
    defer { try? h.close() }
    var hasher = SHA256()
    while let chunk = try h.read(upToCount: 4 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}

/// Builds a job's personalisation dataset (`dubfarm-dataset/1`, docs/dataset.md) from its
/// video into a directory, with at most `maxFrames` frames and the crops of model configuration
/// `config`; returns the frames written. The coordinator is given one by the executable, which
/// links the dub stage's face code (`TrainingData`).
package typealias PersonalisationDatasetBuilder = @Sendable (_ video: URL, _ directory: URL, _ maxFrames: Int, _ config: String) throws -> Int
