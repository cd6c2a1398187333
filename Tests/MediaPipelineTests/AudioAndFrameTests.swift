import FarmTestSupport
import Foundation
import Testing
import DubfarmCore
import MediaPipeline

@Suite struct AudioSliceTests {
    @Test func sliceZeroFillsOutsideTheTrack() {
        let pcm: [Float] = (0..<10).map(Float.init)
        let inside = AudioWindow.slice(pcm: pcm, range: 2..<5)
        #expect(inside.startSample == 2 && inside.samples == [2, 3, 4])
        let before = AudioWindow.slice(pcm: pcm, range: -3..<2)
        #expect(before.startSample == -3 && before.samples == [0, 0, 0, 0, 1])
        let after = AudioWindow.slice(pcm: pcm, range: 8..<12)
        #expect(after.samples == [8, 9, 0, 0])
        let outside = AudioWindow.slice(pcm: pcm, range: 20..<23)
        #expect(outside.samples == [0, 0, 0])
        #expect(AudioWindow.slice(pcm: [], range: 0..<2).samples == [0, 0])
    }
}

@Suite(.enabled(if: TestMedia.available, TestMedia.skipReason))
struct AudioAndFrameTests {
    @Test func decodesDubTo16kMono() throws {
        let pcm = try DubAudio.decodePCM(path: TestMedia.path("dub-2.wav"))
        #expect(abs(Double(pcm.count) / 16_000 - 5.0133) < 0.01)
        #expect(pcm.contains { abs($0) > 0.05 }, "speech should not be silent")
        #expect(pcm.allSatisfy { $0.isFinite && abs($0) <= 1.01 })
        let pcm1 = try DubAudio.decodePCM(path: TestMedia.path("dub-1.wav"))  // 44.1 kHz source
        #expect(abs(Double(pcm1.count) / 16_000 - 5.0155) < 0.01)
        let frames = 0..<25
        let w = AudioWindow.slice(pcm: pcm, range: SegmentPlanner.audioSamples(for: frames, frameRate: Rational(25, 1), marginSeconds: 0.2))
        #expect(w.startSample == -3200 && w.samples.count == 16_000 + 6400)
    }

    @Test func decodesVideoFrames() throws {
        var indices: [Int] = []
        let n = try VideoDecoder.decodeFrames(path: TestMedia.path("speaker-c.mp4"), layout: .rgb24, threads: 1) { f in
            #expect(f.width == 590 && f.height == 590 && f.layout == .rgb24 && f.strides == [1770])
            #expect(f.planes.count == 1 && f.planes[0].count == 1770 * 590)
            indices.append(f.index)
        }
        #expect(n == 125 && indices == Array(0..<125))
        // speaker-a: an edit list and variable frame durations; every one of its 135 frames decodes.
        #expect(try VideoDecoder.decodeFrames(path: TestMedia.path("speaker-a.mp4"), layout: .yuv420p, threads: 2) { _ in } == 135)
    }

    @Test func loadsStillImage() throws {
        let img = try ImageLoader.load(path: TestMedia.path("face-source.png"))
        #expect(img.width == 640 && img.height == 896 && img.layout == .rgb24)
        #expect(img.planes[0].count == 640 * 3 * 896)
        #expect(Set(img.planes[0].prefix(30_000)).count > 16, "a photo, not a flat colour")
    }
}
