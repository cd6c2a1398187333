import DubfarmCore
import Foundation

/// The smoothed face of one frame.
package struct TrackedFace: Sendable, Hashable {
    /// Smoothed face box (see ``FaceObservation/box``), frame pixels.
    package var box: FaceBox
    /// Smoothed crop square; use ``FaceAlignment/transform(cropSize:)`` to warp.
    package var alignment: FaceAlignment
    /// This frame's own landmarks, unsmoothed; nil when bridged or without the landmark model.
    package var landmarks: [Point2]?
    /// This frame's own face box, unsmoothed (interpolated when bridged).
    package var observedBox: FaceBox
    /// This frame's raw detector box (interpolated when bridged).
    package var detectorBox: FaceBox
    /// False when the detector missed this frame and the face was bridged from its neighbours.
    package var detected: Bool
}

/// A frame handed back by the tracker, with its face (nil: no face, pass the frame through).
package struct TrackedFrame: Sendable {
    package var frame: VideoFrame
    package var face: TrackedFace?
}

/// Counts kept by the tracker over the frames it has handed back.
package struct FaceTrackingStats: Sendable, Hashable {
    package var frames = 0
    /// Frames with a face (detected or bridged).
    package var framesWithFace = 0
    /// Frames bridged over a detection miss (included in ``framesWithFace``).
    package var bridgedFrames = 0
    /// Frames whose face was followed from the previous frame rather than detected.
    package var followedFrames = 0
    /// Frames the detector searched.
    package var detectorRuns = 0
    /// Frames without a face: they pass through unchanged.
    package var framesWithoutFace: Int { frames - framesWithFace }
    package init() {}
}

/// Follows the face through a segment's frames (context frames included), fed in order.
///
/// Each frame is analysed as it arrives: its face followed from the previous frame's landmarks,
/// or searched by the detector (near the previous detection) on every
/// ``Parameters/redetectInterval``-th frame and wherever following loses it. A frame is handed back
/// ``Parameters/latency`` frames later, once its smoothing window and gap look-ahead are known:
///
/// - **Bridging**: a frame without a detection, within ``Parameters/maxGap`` frames of detections,
///   gets the face interpolated between them (held from one side at a stream end), provided the
///   frame still shows a face-like pattern there (luma standard deviation and cascade stage depth
///   above thresholds), so a black or cut frame is not given a face.
/// - **Smoothing**: box and crop square are Gaussian-weighted averages (σ = radius / 2) of the
///   frame's own and its ±``Parameters/smoothingRadius`` neighbours' observations; neighbours
///   without a face are left out. Centred windows need no future beyond the radius, so a segment
///   with at least `radius` context frames on each side gets, at its borders, exactly the
///   trajectory one long run would give.
package final class FaceTracker {
    package struct Parameters: Sendable, Hashable {
        /// Neighbours on each side averaged into a frame's crop.
        package var smoothingRadius = 3
        /// Longest run of missed frames bridged.
        package var maxGap = 4
        /// A bridged face needs at least this luma standard deviation in its box.
        package var bridgeMinStdDev = 8.0
        /// ... and at least this fraction of cascade stages passed near its box.
        package var bridgeMinStageDepth = 0.5
        /// Frames whose index is a multiple of this are always searched by the detector; in
        /// between, the face is followed from the previous frame's landmarks
        /// (``FaceAnalyzer/follow(_:from:minStdDev:minStageDepth:)``) and the detector runs only
        /// where following loses it. 1: the detector on every frame. A segment whose first decoded
        /// frames lie before the next multiple sees the same faces as one long run from there on,
        /// so up to `smoothingRadius + maxGap` context frames keep segment borders seamless.
        package var redetectInterval = 4
        /// Frames held back before being handed out.
        package var latency: Int { smoothingRadius + maxGap }
        package init() {}
    }

    package let analyzer: FaceAnalyzer
    package let parameters: Parameters
    package private(set) var stats = FaceTrackingStats()

    private struct Entry {
        var frame: VideoFrame
        var analysis: FaceDetector.AnalysisImage?
        var observation: FaceObservation?
        var detected: Bool
        /// Bridging has been decided.
        var resolved: Bool
    }

    /// Entries from sequence number `base` on: the last `smoothingRadius` handed out (kept for
    /// their observations) and the pending ones.
    private var entries: [Entry] = []
    private var base = 0
    /// Sequence number of the next entry to hand out.
    private var nextOut = 0
    private var lastBox: FaceBox?
    /// The previous frame's own observation (nil when it had none): what the next one follows.
    private var previous: FaceObservation?

    /// Per-frame analysis; replaceable in tests to simulate detector misses.
    private let observe: (VideoFrame, FaceBox?) -> FaceObservation?
    /// Following from the previous frame's observation; nil: the detector on every frame.
    private let follow: ((VideoFrame, FaceObservation) -> FaceObservation?)?

    /// A tracker with the analyzer's detection (``FaceAnalyzer/analyze(_:near:)``) and following
    /// (``FaceAnalyzer/follow(_:from:minStdDev:minStageDepth:)``).
    package convenience init(analyzer: FaceAnalyzer, parameters: Parameters = Parameters()) {
        self.init(analyzer: analyzer, parameters: parameters, follow: Self.following(analyzer, parameters),
                  observe: { analyzer.analyze($0, near: $1) })
    }

    /// A tracker whose per-frame analysis is `observe(frame, previousDetectorBox)` (it must behave
    /// like ``FaceAnalyzer/analyze(_:near:)``) and whose following is `follow(frame, previous)`
    /// (nil: none, the detector on every frame): for tests that simulate misses, and for callers
    /// that time detection, landmarks and following separately.
    package init(analyzer: FaceAnalyzer, parameters: Parameters = Parameters(),
                follow: ((VideoFrame, FaceObservation) -> FaceObservation?)? = nil,
                observe: @escaping (VideoFrame, FaceBox?) -> FaceObservation?) {
        self.analyzer = analyzer
        self.parameters = parameters
        self.observe = observe
        self.follow = follow
    }

    /// The analyzer's following with the tracker's face-likeness thresholds.
    package static func following(_ analyzer: FaceAnalyzer, _ parameters: Parameters) -> (VideoFrame, FaceObservation) -> FaceObservation? {
        { analyzer.follow($0, from: $1, minStdDev: parameters.bridgeMinStdDev, minStageDepth: parameters.bridgeMinStageDepth) }
    }

    /// Takes the next frame; returns the frames now ready, in order.
    package func push(_ frame: VideoFrame) -> [TrackedFrame] {
        var obs: FaceObservation?
        if let follow, let prev = previous, parameters.redetectInterval > 1, frame.index % parameters.redetectInterval != 0 {
            obs = follow(frame, prev)
            if obs != nil { stats.followedFrames += 1 }
        }
        if obs == nil {
            obs = observe(frame, lastBox)
            stats.detectorRuns += 1
        }
        previous = obs
        if let o = obs { lastBox = o.detectorBox }
        entries.append(Entry(frame: frame, analysis: nil, observation: obs, detected: obs != nil, resolved: obs != nil))
        return drain(final: false)
    }

    /// Returns every frame still held (call once after the last frame).
    package func flush() -> [TrackedFrame] {
        drain(final: true)
    }

    private var end: Int { base + entries.count }

    private func drain(final: Bool) -> [TrackedFrame] {
        // Resolve gaps whose look-ahead is complete.
        let resolvableEnd = final ? end : end - parameters.maxGap
        var i = nextOut
        while i < resolvableEnd {
            if !entries[i - base].resolved { resolveGap(at: i, final: final) }
            i += 1
        }
        var out: [TrackedFrame] = []
        let readyEnd = final ? end : end - parameters.latency
        while nextOut < readyEnd {
            out.append(emit(nextOut, final: final))
            nextOut += 1
        }
        // Keep enough handed-out entries for the next windows and gap look-backs.
        let keepFrom = max(base, nextOut - max(parameters.smoothingRadius, parameters.maxGap))
        if keepFrom > base {
            entries.removeFirst(keepFrom - base)
            base = keepFrom
        }
        return out
    }

    private func resolveGap(at i: Int, final: Bool) {
        let g = parameters.maxGap
        var prev: Int?, next: Int?
        var j = i - 1
        while j >= max(base, i - g) {
            if entries[j - base].detected { prev = j; break }
            j -= 1
        }
        j = i + 1
        while j < min(end, i + g + 1) {
            if entries[j - base].detected { next = j; break }
            j += 1
        }
        entries[i - base].resolved = true
        let candidate: (FaceBox, FaceAlignment, FaceBox)
        switch (prev, next) {
        case let (p?, n?):
            let a = entries[p - base].observation!, b = entries[n - base].observation!
            let t = Double(i - p) / Double(n - p)
            candidate = (lerp(a.box, b.box, t), lerp(a.alignment, b.alignment, t), lerp(a.detectorBox, b.detectorBox, t))
        case let (p?, nil):
            let a = entries[p - base].observation!
            candidate = (a.box, a.alignment, a.detectorBox)
        case let (nil, n?):
            let b = entries[n - base].observation!
            candidate = (b.box, b.alignment, b.detectorBox)
        default:
            return
        }
        guard looksLikeFace(entries[i - base].frame, box: candidate.2) else { return }
        entries[i - base].observation = FaceObservation(box: candidate.0, detectorBox: candidate.2, landmarks: nil,
                                                        alignment: candidate.1, neighbors: 0)
    }

    private func looksLikeFace(_ frame: VideoFrame, box: FaceBox) -> Bool {
        analyzer.looksLikeFace(frame, detectorBox: box, minStdDev: parameters.bridgeMinStdDev, minStageDepth: parameters.bridgeMinStageDepth)
    }

    private func emit(_ i: Int, final: Bool) -> TrackedFrame {
        let e = entries[i - base]
        stats.frames += 1
        guard let own = e.observation else { return TrackedFrame(frame: e.frame, face: nil) }
        stats.framesWithFace += 1
        if !e.detected { stats.bridgedFrames += 1 }
        let r = parameters.smoothingRadius
        let sigma = max(Double(r) / 2, 0.5)
        var wsum = 0.0
        var box = (0.0, 0.0, 0.0, 0.0)
        var al = (0.0, 0.0, 0.0, 0.0, 0.0)   // cx, cy, half, cos, sin
        for j in max(base, i - r)...min(end - 1, i + r) {
            guard let o = entries[j - base].observation else { continue }
            let d = Double(j - i)
            let w = exp(-0.5 * d * d / (sigma * sigma))
            wsum += w
            box.0 += w * o.box.centerX; box.1 += w * o.box.centerY
            box.2 += w * o.box.width; box.3 += w * o.box.height
            al.0 += w * o.alignment.center.x; al.1 += w * o.alignment.center.y
            al.2 += w * o.alignment.halfSide
            al.3 += w * cos(o.alignment.angle); al.4 += w * sin(o.alignment.angle)
        }
        let k = 1 / wsum
        let sbox = FaceBox(x: box.0 * k - box.2 * k / 2, y: box.1 * k - box.3 * k / 2, width: box.2 * k, height: box.3 * k)
        let salign = FaceAlignment(center: Point2(al.0 * k, al.1 * k), halfSide: al.2 * k, angle: atan2(al.4, al.3))
        return TrackedFrame(frame: e.frame, face: TrackedFace(box: sbox, alignment: salign, landmarks: own.landmarks, observedBox: own.box, detectorBox: own.detectorBox, detected: e.detected))
    }
}

private func lerp(_ a: FaceBox, _ b: FaceBox, _ t: Double) -> FaceBox {
    FaceBox(x: a.x + t * (b.x - a.x), y: a.y + t * (b.y - a.y), width: a.width + t * (b.width - a.width),
            height: a.height + t * (b.height - a.height))
}

private func lerp(_ a: FaceAlignment, _ b: FaceAlignment, _ t: Double) -> FaceAlignment {
    var da = b.angle - a.angle
    if da > .pi { da -= 2 * .pi }
    if da < -.pi { da += 2 * .pi }
    return FaceAlignment(center: a.center + (b.center - a.center) * t, halfSide: a.halfSide + t * (b.halfSide - a.halfSide),
                         angle: a.angle + t * da)
}
