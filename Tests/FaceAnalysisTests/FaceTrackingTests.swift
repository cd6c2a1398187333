import DubfarmCore
@testable import FaceAnalysis
import FarmTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: TestModels.faceReady,
                             "needs opencv-data, libdlib-data, ffmpeg and ../shared/media (installed by .ci/run)"))
struct FaceTrackingTests {
    @Test(arguments: ["speaker-a.mp4", "speaker-b.mp4", "speaker-c.mp4"])
    func facesFoundAndSteady(_ name: String) throws {
        let tracker = FaceTracker(analyzer: TestModels.analyzer)
        var out: [TrackedFrame] = []
        var analysisTime = 0.0
        try TestMedia.forEachFrame(TestMedia.path(name), limit: TestModels.debugFrameLimit) { f in
            let t0 = Date()
            out += tracker.push(f)
            analysisTime += Date().timeIntervalSince(t0)
        }
        out += tracker.flush()
        let n = out.count
        let detected = out.filter { $0.face?.detected == true }.count
        let withFace = out.filter { $0.face != nil }.count
        var ious: [Double] = []
        for i in 1..<n {
            if let a = out[i - 1].face?.box, let b = out[i].face?.box { ious.append(a.iou(b)) }
        }
        var landmarksOutside = 0, landmarkFrames = 0, outsideDetectorBox = 0, implausible = 0
        for f in out {
            guard let face = f.face, let lm = face.landmarks else { continue }
            landmarkFrames += 1
            #expect(lm.count == 68)
            landmarksOutside += lm.filter { !face.observedBox.contains($0) }.count
            // Independent of how the face box is drawn: within the raw detector box grown by 20%
            // per side, and in anatomical order (eyes above nose tip above mouth above chin).
            outsideDetectorBox += lm.filter { !face.detectorBox.expanded(by: 0.2).contains($0) }.count
            let eyeL = Point2.mean(lm[36..<42]), eyeR = Point2.mean(lm[42..<48])
            if !(eyeL.x < eyeR.x && max(eyeL.y, eyeR.y) < lm[30].y && lm[30].y < lm[51].y && lm[57].y < lm[8].y) { implausible += 1 }
        }
        let rate = Double(detected) / Double(n)
        print(String(format: "%@: %d frames, detected %d (%.1f%%), with face %d, median IoU %.3f (min %.3f), landmarks outside face box %d, outside detector box+20%% %d, implausible %d, %.1f ms/frame",
                     name, n, detected, 100 * rate, withFace, median(ious), ious.min() ?? 0, landmarksOutside, outsideDetectorBox, implausible, 1000 * analysisTime / Double(n)))
        #expect(n == tracker.stats.frames)
        #expect(rate >= 0.95)
        #expect(median(ious) >= 0.9)
        #expect(landmarkFrames >= detected)
        #expect(landmarksOutside == 0)
        #expect(outsideDetectorBox == 0)
        #expect(implausible == 0)
    }

    @Test func exactlyOneFaceOnSourcePhoto() throws {
        let img = try TestMedia.image(TestMedia.path("face-source.png"))
        let faces = TestModels.analyzer.detector.detect(in: img)
        print("face-source.png:", faces.map { "\($0.box) neighbours \($0.neighbors)" })
        #expect(faces.count == 1)
        if let obs = TestModels.analyzer.analyze(img), let lm = obs.landmarks {
            #expect(lm.allSatisfy { obs.box.contains($0) })
        }
    }

    /// Segment 1 outputs [0, 65) with context up to 70; segment 2 outputs [65, 125) with context
    /// from 60 (debug builds: the same on the first 45 frames, seam at 25).
    @Test func noJumpAtSegmentSeam() throws {
        let total = TestModels.debugFrameLimit.map { _ in 45 } ?? 125
        let seamAt = total == 125 ? 65 : 25
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path("speaker-b.mp4"), limit: total) { frames.append($0) }
        #expect(frames.count == total)
        func run(_ range: Range<Int>) -> [Int: FaceAlignment] {
            let t = FaceTracker(analyzer: TestModels.analyzer)
            var out: [TrackedFrame] = []
            for i in range { out += t.push(frames[i]) }
            out += t.flush()
            var d: [Int: FaceAlignment] = [:]
            for f in out { if let a = f.face?.alignment { d[f.frame.index] = a } }
            return d
        }
        let seg1 = run(0..<(seamAt + 5)), seg2 = run((seamAt - 5)..<total)
        var trajectory: [FaceAlignment] = []
        for i in 0..<total {
            guard let a = i < seamAt ? seg1[i] : seg2[i] else { Issue.record("no face at frame \(i)"); return }
            trajectory.append(a)
        }
        // Jump = largest displacement of a corner of the crop square between consecutive frames.
        func jump(_ a: FaceAlignment, _ b: FaceAlignment) -> Double {
            let ta = a.transform(cropSize: 1), tb = b.transform(cropSize: 1)
            return [Point2(0, 0), Point2(1, 0), Point2(0, 1), Point2(1, 1)].map { (ta.apply($0) - tb.apply($0)).length }.max()!
        }
        let jumps = (1..<total).map { jump(trajectory[$0 - 1], trajectory[$0]) }
        let seam = jumps[seamAt - 1]
        let inside = jumps.enumerated().filter { $0.offset != seamAt - 1 }.map(\.element).max()!
        // One run over everything: the segmented trajectory should match it near the seam.
        let whole = run(0..<total)
        let deviation = ((seamAt - 5)..<min(total, seamAt + 5)).map { jump(whole[$0]!, trajectory[$0]) }.max()!
        print(String(format: "seam jump %.2f px, largest in-segment jump %.2f px, deviation from one unsegmented run near the seam %.3g px",
                     seam, inside, deviation))
        #expect(seam <= inside)
        #expect(deviation < 0.5)
    }

    @Test func blackFramePassesThroughAndIsCounted() throws {
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path("speaker-c.mp4"), limit: 40) { frames.append($0) }
        let f = frames[20]
        frames[20] = VideoFrame(width: f.width, height: f.height, layout: .rgb24,
                                planes: [[UInt8](repeating: 0, count: f.planes[0].count)], strides: f.strides, index: 20)
        let tracker = FaceTracker(analyzer: TestModels.analyzer)
        var out: [TrackedFrame] = []
        for fr in frames { out += tracker.push(fr) }
        out += tracker.flush()
        #expect(out.count == 40)
        #expect(out.map(\.frame.index) == Array(0..<40))
        #expect(out[20].face == nil)
        #expect(out[20].frame.planes == frames[20].planes)
        #expect(tracker.stats.framesWithoutFace == 1)
        #expect(tracker.stats.framesWithFace == 39)
    }

    /// Following (the detector on every fourth frame, landmarks carried from the frame before on
    /// the others) against the detector on every frame: the same faces, crop squares within a
    /// pixel or two, and most frames followed.
    @Test(arguments: ["speaker-a.mp4", "speaker-b.mp4", "speaker-c.mp4"])
    func followingAgreesWithDetection(_ name: String) throws {
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path(name), limit: TestModels.debugFrameLimit ?? 80) { frames.append($0) }
        func run(_ interval: Int) -> (faces: [Int: TrackedFace], stats: FaceTrackingStats, ms: Double) {
            var p = FaceTracker.Parameters()
            p.redetectInterval = interval
            let t = FaceTracker(analyzer: TestModels.analyzer, parameters: p)
            let t0 = Date()
            var out: [TrackedFrame] = []
            for f in frames { out += t.push(f) }
            out += t.flush()
            let ms = 1000 * Date().timeIntervalSince(t0) / Double(frames.count)
            var faces: [Int: TrackedFace] = [:]
            for f in out { faces[f.frame.index] = f.face }
            return (faces, t.stats, ms)
        }
        let detected = run(1), followed = run(4)
        #expect(detected.stats.followedFrames == 0)
        #expect(detected.stats.detectorRuns == frames.count)
        #expect(Set(followed.faces.keys) == Set(detected.faces.keys), "the same frames have a face")
        var deviations: [Double] = []
        for (i, a) in detected.faces {
            guard let b = followed.faces[i] else { continue }
            let ta = a.alignment.transform(cropSize: 1), tb = b.alignment.transform(cropSize: 1)
            // Largest displacement of a crop corner, frame pixels.
            deviations.append([Point2(0, 0), Point2(1, 0), Point2(0, 1), Point2(1, 1)].map { (ta.apply($0) - tb.apply($0)).length }.max()!)
        }
        let side = detected.faces.values.map { 2 * $0.alignment.halfSide }.reduce(0, +) / Double(max(1, detected.faces.count))
        print(String(format: "%@: %d frames, followed %d, detector %d; crop corners vs detection every frame: median %.2f px, max %.2f px (crop side %.0f px); %.1f vs %.1f ms/frame",
                     name, frames.count, followed.stats.followedFrames, followed.stats.detectorRuns, median(deviations),
                     deviations.max() ?? 0, side, followed.ms, detected.ms))
        #expect(followed.stats.followedFrames + followed.stats.detectorRuns == frames.count)
        #expect(Double(followed.stats.followedFrames) >= 0.7 * Double(frames.count))
        #expect(median(deviations) < 0.01 * side)
        #expect((deviations.max() ?? 0) < 0.04 * side)
    }

    /// The analysis image computed only around a face (what following's face check reads) has,
    /// there, exactly the pixels of the whole frame's.
    @Test func preparedAroundAFaceMatchesTheWholeFrame() throws {
        for name in ["speaker-b.mp4", "speaker-c.mp4"] {
            var frame: VideoFrame?
            try TestMedia.forEachFrame(TestMedia.path(name), limit: 1) { frame = $0 }
            let f = try #require(frame)
            let d = TestModels.analyzer.detector
            let box = try #require(d.detect(in: f).first).box
            let whole = d.prepare(f), part = d.prepare(f, around: box, margin: 0.6)
            #expect(part.factor == whole.factor)
            #expect(part.image.width == whole.image.width && part.image.height == whole.image.height)
            let b = box.scaled(by: 1 / whole.factor)
            let x0 = max(0, Int((b.x - 0.6 * b.width).rounded(.down))), y0 = max(0, Int((b.y - 0.6 * b.height).rounded(.down)))
            let x1 = min(whole.image.width, Int((b.maxX + 0.6 * b.width).rounded(.up)))
            let y1 = min(whole.image.height, Int((b.maxY + 0.6 * b.height).rounded(.up)))
            var differing = 0, compared = 0
            for y in y0..<y1 {
                for x in x0..<x1 {
                    let i = y * whole.image.width + x
                    if part.image.pixels[i] != whole.image.pixels[i] { differing += 1 }
                    compared += 1
                }
            }
            #expect(compared > 1000)
            #expect(differing == 0, "\(name): \(differing) of \(compared) pixels differ")
        }
    }

    /// A cut to black between two detector frames: following must notice that the face is gone,
    /// and the frames after it find the face again.
    @Test func followingLosesAFaceThatIsGone() throws {
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path("speaker-c.mp4"), limit: 30) { frames.append($0) }
        let blackAt = 21   // not a multiple of redetectInterval (4): frame 20's face is followed into it
        let f = frames[blackAt]
        frames[blackAt] = VideoFrame(width: f.width, height: f.height, layout: .rgb24,
                                     planes: [[UInt8](repeating: 0, count: f.planes[0].count)], strides: f.strides, index: blackAt)
        let tracker = FaceTracker(analyzer: TestModels.analyzer)
        var out: [TrackedFrame] = []
        for fr in frames { out += tracker.push(fr) }
        out += tracker.flush()
        #expect(out.map(\.frame.index) == Array(0..<30))
        #expect(out[blackAt].face == nil)
        #expect(out[blackAt - 1].face != nil && out[blackAt + 1].face != nil && out[blackAt + 2].face != nil)
        #expect(tracker.stats.framesWithoutFace == 1)
        #expect(tracker.stats.followedFrames > 15)
    }

    @Test(arguments: [BlendMask.lowerFace, BlendMask.wholeFace])
    func warpRoundTrip(_ mask: BlendMask) throws {
        for name in ["speaker-b.mp4", "speaker-c.mp4"] {
            var frame: VideoFrame?
            try TestMedia.forEachFrame(TestMedia.path(name), limit: 1) { frame = $0 }
            let input = try #require(frame)
            let obs = try #require(TestModels.analyzer.analyze(input))
            let size = 320
            let t = obs.alignment.transform(cropSize: size)
            let crop = try FaceWarp.crop(input, transform: t, size: size)
            var output = input
            let written = try FaceWarp.paste(crop, into: &output, transform: t, mask: mask)
            let w = input.width
            var inside = [Bool](repeating: false, count: input.planes[0].count)
            var outsideChanged = 0
            for y in 0..<input.height {
                for x in 0..<w {
                    let m = FaceWarp.maskWeight(atFramePixel: x, y, transform: t, cropSize: size, mask: mask)
                    let o = y * input.strides[0] + x * 3
                    if m > 0 {
                        inside[o] = true; inside[o + 1] = true; inside[o + 2] = true
                    } else if input.planes[0][o..<(o + 3)] != output.planes[0][o..<(o + 3)] {
                        outsideChanged += 1
                    }
                }
            }
            let p = psnr(input.planes[0], output.planes[0]) { inside[$0] }
            print(String(format: "%@ %@: crop scale %.2f, %d pixels blended, PSNR %.1f dB, changed outside mask %d",
                         name, "\(mask)", t.scale, written, p, outsideChanged))
            #expect(written > 1000)
            #expect(outsideChanged == 0)
            #expect(p >= 40)
        }
    }

    @Test func missingLandmarkModelFallsBackToBoxCrop() throws {
        var messages: [String] = []
        let a = try FaceAnalyzer.load(landmarkPath: "/nonexistent/shape_predictor.dat") { messages.append($0) }
        #expect(messages.count == 1)
        #expect(a.predictor == nil)
        let img = try TestMedia.image(TestMedia.path("face-source.png"))
        let obs = try #require(a.analyze(img))
        #expect(obs.landmarks == nil)
        #expect(obs.alignment == FaceAlignment.fromBox(obs.detectorBox))
    }

    @Test func corruptModelsAreRejectedWithTheFileName() throws {
        #expect(throws: DubfarmError.self) { try ShapePredictor(serialized: [1, 1, 0x81, 0x88], name: "bad.dat") }
        do {
            _ = try HaarCascade(xml: Data("<opencv_storage><foo/></opencv_storage>".utf8), name: "bad.xml")
            Issue.record("accepted a bad cascade")
        } catch let e as DubfarmError {
            #expect(e.message.contains("bad.xml"))
        }
    }

    /// Per-stage milliseconds per frame on speaker-b (844×844), printed for the report (inside this
    /// serialized suite so no other face test competes for the CPU); asserts nothing about speed.
    @Test func perStageMilliseconds() throws {
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path("speaker-b.mp4"), limit: 10) { frames.append($0) }
        let a = TestModels.analyzer
        func ms(_ body: (VideoFrame) throws -> Void) rethrows -> Double {
            let t0 = Date()
            for f in frames { try body(f) }
            return Date().timeIntervalSince(t0) * 1000 / Double(frames.count)
        }
        let first = try #require(a.analyze(frames[0]))
        let prepare = ms { _ = a.detector.prepare($0) }
        let full = ms { _ = a.detector.detect(in: $0) }
        let roi = ms { _ = a.detector.detect(in: $0, near: first.detectorBox) }
        let lm = ms { _ = a.predictor?.landmarks(in: $0, box: first.box) }
        let t = first.alignment.transform(cropSize: 320)
        let warp = try ms { _ = try FaceWarp.crop($0, transform: t, size: 320) }
        let crop = try FaceWarp.crop(frames[0], transform: t, size: 320)
        let paste = try ms { f in
            var g = f
            try FaceWarp.paste(crop, into: &g, transform: t, mask: .lowerFace)
        }
        print(String(format: "speaker-b 844x844 ms/frame: prepare (luma+shrink to 320) %.1f, detect full frame %.1f, detect near previous %.1f, landmarks (one pass) %.1f, warp 320x320 %.1f, paste+blend lower face %.1f",
                     prepare, full, roi, lm, warp, paste))
        #expect(full > 0)
    }
}
