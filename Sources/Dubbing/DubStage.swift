import AudioFeatures
import DubfarmCore
import Engine
import FaceAnalysis
import Foundation
import Logging
import MediaPipeline
import Synchronization
import VQModel
import Worker

/// What lives for the whole worker process: the model, the face models, and the source face of
/// the job last seen (encoded once per job, reused by all its segments).
package final class DubEngine: Sendable {
    package let model: DubModel
    package let analyzer: FaceAnalyzer
    package let trackerParameters: FaceTracker.Parameters
    let logger: Logger

    private struct CachedSource: Sendable {
        let key: UInt64
        let byteCount: Int
        let source: SwapSource
    }
    private let sourceCache = Mutex<CachedSource?>(nil)
    private let encodings = Atomic<Int>(0)
    /// How many source faces this engine has encoded (cache misses).
    package var sourceEncodings: Int { encodings.load(ordering: .relaxed) }

    package init(model: DubModel, analyzer: FaceAnalyzer, trackerParameters: FaceTracker.Parameters = .init(), logger: Logger) {
        self.model = model
        self.analyzer = analyzer
        self.trackerParameters = trackerParameters
        self.logger = logger
    }

    /// The encoded source face for a job's face image bytes: from the cache when the bytes are
    /// the ones seen last, else decoded, found, aligned, cropped and encoded once.
    package func source(for faceBytes: [UInt8], logger: Logger) throws -> SwapSource {
        let key = FNV1a.hash(faceBytes)
        if let hit = sourceCache.withLock({ cache -> SwapSource? in
            guard let c = cache, c.key == key, c.byteCount == faceBytes.count else { return nil }
            return c.source
        }) {
            return hit
        }
        let t0 = Benchmark.now()
        let image = try Self.decodeImage(faceBytes)
        guard let face = analyzer.analyze(image) else {
            throw DubfarmError(.badInput, "the job's source face image (\(image.width)x\(image.height), \(faceBytes.count) bytes) "
                               + "shows no face the detector can find; use a frontal portrait")
        }
        let s = model.model.config.imageSize
        let crop = try FaceWarp.crop(image, transform: face.alignment.transform(cropSize: s), size: s)
        let ctx = ComputeContext(threads: 1)
        let tensor = ctx.workspace.tensor([3, s, s])
        ImageTensor.fill(tensor, from: crop)
        let source: SwapSource
        do { source = try model.model.prepareSource(image: tensor, ctx) } catch {
            throw DubfarmError(.internalError, "encoding the source face failed: \(error)")
        }
        encodings.add(1, ordering: .relaxed)
        sourceCache.withLock { $0 = CachedSource(key: key, byteCount: faceBytes.count, source: source) }
        logger.info("source face encoded", metadata: [
            "face_box": .string("\(face.box)"), "landmarks": .string(face.landmarks == nil ? "no" : "yes"),
            "ms": .string(String(format: "%.0f", 1000 * (Benchmark.now() - t0))),
        ])
        return source
    }

    /// Decodes PNG/JPEG bytes (through a private temporary file: FFmpeg reads files).
    static func decodeImage(_ bytes: [UInt8]) throws -> VideoFrame {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-face-\(UUID().uuidString)")
        do { try Data(bytes).write(to: url) } catch {
            throw DubfarmError(.io, "cannot write the source face to \(url.path): \(error.localizedDescription)")
        }
        defer { try? FileManager.default.removeItem(at: url) }
        do { return try ImageLoader.load(path: url.path) } catch let e as DubfarmError {
            throw DubfarmError(e.code, "the job's source face image cannot be decoded: \(e.message)")
        }
    }
}

/// The `dub` stage: face swap (when the job has a source face) and lip sync on every frame
/// with a face, through the VQ model; frames without a face pass through unchanged.
package struct DubStage: Stage {
    package let engine: DubEngine
    /// Engines of jobs' personalised weights, built on first use from ``engine``'s face models.
    let personalised: PersonalisedEngines

    package init(engine: DubEngine) {
        self.engine = engine
        personalised = PersonalisedEngines(base: engine)
    }

    package var name: String { "dub" }
    package var layout: VideoFrame.Layout { .rgb24 }
    package var model: String? { engine.model.id }

    package func makeProcessor(for context: StageContext) throws -> any FrameProcessor {
        var log = self.engine.logger
        log[metadataKey: "job"] = .stringConvertible(context.task.segment.job)
        log[metadataKey: "segment"] = .stringConvertible(context.task.segment.index)
        let engine = try context.weights.map { try personalised.engine(for: $0) } ?? self.engine
        var face = context.sourceFace
        if face != nil && !engine.model.swapsFaces {
            // An untrained swap would make the face worse: lip sync only, with the lower-face mask.
            log.warning("model \(engine.model.id) has no trained face swap; the job's source face is not applied (lip sync only)",
                        metadata: ["model": .string(engine.model.id)])
            face = nil
        }
        let source = try face.map { try engine.source(for: $0, logger: log) }
        return try DubProcessor(engine: engine, context: context, source: source)
    }

    package func statistics(of processor: any FrameProcessor) -> (framesWithFace: Int, framesSwapped: Int) {
        guard let p = processor as? DubProcessor else { return (0, 0) }
        return (p.counts.framesWithFace, p.counts.framesSwapped)
    }

    package func timings(of processor: any FrameProcessor) -> [(step: String, msPerFrame: Double)] {
        (processor as? DubProcessor)?.timings.msPerFrame ?? []
    }
}

/// The engines of jobs' personalised weights (``Worker/PersonalisedWeights``): each loaded once
/// and shared by the job's segments; the two used last are kept, so two personalised jobs can
/// alternate on one worker without reloading, and an old job's weights do not pile up.
final class PersonalisedEngines: Sendable {
    let base: DubEngine
    private let engines = Mutex<[(sha256: String, engine: DubEngine)]>([])
    static let kept = 2

    init(base: DubEngine) { self.base = base }

    func engine(for weights: PersonalisedWeights) throws -> DubEngine {
        if let hit = engines.withLock({ list -> DubEngine? in
            guard let i = list.firstIndex(where: { $0.sha256 == weights.sha256 }) else { return nil }
            let e = list.remove(at: i)
            list.append(e)
            return e.engine
        }) {
            return hit
        }
        // The personalised file holds the base model's tensors, fine-tuned: it is read with the
        // base's manifest (architecture and configuration).
        guard let baseDirectory = base.model.directory else {
            throw DubfarmError(.unsupported, "personalised weights need a worker whose --model is a weights directory, not seeded weights")
        }
        let manifest = weights.directory.appendingPathComponent(SwapTalkModel.manifestFile)
        if !FileManager.default.fileExists(atPath: manifest.path) {
            do { try FileManager.default.copyItem(at: baseDirectory.appendingPathComponent(SwapTalkModel.manifestFile), to: manifest) } catch {
                if !FileManager.default.fileExists(atPath: manifest.path) {
                    throw DubfarmError(.io, "cannot place the model manifest beside the personalised weights in \(weights.directory.path): \(error)")
                }
            }
        }
        let t0 = Date()
        let model: DubModel
        do { model = try DubModel.load(directory: weights.directory) } catch let e as DubfarmError {
            throw DubfarmError(e.code, "the job's personalised weights \(weights.sha256.prefix(16))… do not load with this worker's model (\(base.model.id)): \(e.message)")
        }
        let engine = DubEngine(model: model, analyzer: base.analyzer, trackerParameters: base.trackerParameters, logger: base.logger)
        base.logger.info("personalised weights loaded", metadata: [
            "weights": .string(weights.sha256), "model": .string(model.id), "base": .string(base.model.id),
            "seconds": .string(String(format: "%.2f", Date().timeIntervalSince(t0)))])
        engines.withLock { list in
            list.removeAll { $0.sha256 == weights.sha256 }
            list.append((weights.sha256, engine))
            if list.count > Self.kept { list.removeFirst(list.count - Self.kept) }
        }
        return engine
    }
}
