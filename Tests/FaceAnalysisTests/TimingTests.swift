import DubfarmCore
import FaceAnalysis
import Foundation
import Testing

/// Per-stage milliseconds per frame on speaker-b (844×844), printed for the report; asserts nothing
/// about speed (shared CI machines), only that the stages ran.
@Suite(.enabled(if: TestModels.faceReady, "needs opencv-data, libdlib-data, ffmpeg and ../shared/media"))
struct TimingTests {
    @Test func perStageMilliseconds() throws {
        var frames: [VideoFrame] = []
        try TestMedia.forEachFrame(TestMedia.path("speaker-b.mp4"), extraArgs: ["-frames:v", "10"]) { frames.append($0) }
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
