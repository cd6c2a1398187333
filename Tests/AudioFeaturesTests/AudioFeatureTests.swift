@testable import AudioFeatures
import Foundation
import Testing

@Suite struct AudioFeatureTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    static func readF32(_ name: String) throws -> [Float] {
        let d = try Data(contentsOf: fixtures.appendingPathComponent(name))
        return d.withUnsafeBytes { raw in
            (0..<(d.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    /// The numpy reference (tools/reference/mel_fixture.py) within 1e-4 absolute on the
    /// normalised log-mel values (range [−4, 4]).
    @Test func matchesNumpyReference() throws {
        let input = try Self.readF32("mel_input.f32")
        let expected = try Self.readF32("mel_expected.f32")
        let t0 = Date()
        let mel = MelSpectrogram().compute(input)
        let ms = Date().timeIntervalSince(t0) * 1000
        #expect(mel.frames == 81)
        #expect(mel.values.count == expected.count)
        var maxErr: Float = 0
        for (a, b) in zip(mel.values, expected) { maxErr = max(maxErr, abs(a - b)) }
        let floorShare = Double(expected.filter { $0 == -4 }.count) / Double(expected.count)
        print(String(format: "log-mel vs numpy: max abs error %.2e over %d values (%.0f%% at the floor), %.1f ms for 1 s of audio",
                     maxErr, expected.count, 100 * floorShare, ms))
        #expect(maxErr <= 1e-4)
    }

    @Test(arguments: [800, 400, 60, 12, 5, 2, 1])
    func fftMatchesDirectDFT(_ n: Int) {
        var data = (0..<(2 * n)).map { sin(Double($0) * 0.37) + 0.1 * Double($0 % 7) }
        let input = data
        ComplexFFT(count: n).transform(&data)
        var maxErr = 0.0
        for k in 0..<n {
            var re = 0.0, im = 0.0
            for j in 0..<n {
                let a = -2 * Double.pi * Double(j * k % n) / Double(n)
                re += input[2 * j] * cos(a) - input[2 * j + 1] * sin(a)
                im += input[2 * j] * sin(a) + input[2 * j + 1] * cos(a)
            }
            maxErr = max(maxErr, abs(re - data[2 * k]), abs(im - data[2 * k + 1]))
        }
        #expect(maxErr < 1e-9 * Double(n))
    }

    @Test func realFFTMatchesDirectDFT() {
        let n = 800
        let x = (0..<n).map { sin(Double($0) * 0.11) + cos(Double($0) * 1.3) * 0.5 }
        var mags: [Double] = []
        x.withUnsafeBufferPointer { RealFFT(count: n).magnitudes($0, into: &mags) }
        #expect(mags.count == 401)
        for k in stride(from: 0, through: 400, by: 7) {
            var re = 0.0, im = 0.0
            for j in 0..<n {
                let a = -2 * Double.pi * Double(j * k % n) / Double(n)
                re += x[j] * cos(a)
                im += x[j] * sin(a)
            }
            #expect(abs((re * re + im * im).squareRoot() - mags[k]) < 1e-8)
        }
    }

    @Test func windowsAreCentredAndSilentBeyondTheTrack() {
        // A track of 1 s whose mel frame m holds the value m in every bin.
        let frames = 81
        var values = [Float](repeating: 0, count: frames * 80)
        for m in 0..<frames { for b in 0..<80 { values[m * 80 + b] = Float(m) } }
        let mel = LogMel(frames: frames, values: values, firstFrame: 0)
        // 25 fps: video frame 10 is at 0.4 s = mel frame 32 → window 24..<40.
        let w = mel.melWindow(forFrame: 10, frameRateNum: 25, den: 1)
        #expect(w.count == 80 * 16)
        #expect(Array(w[0..<16]) == (24..<40).map(Float.init))
        #expect(w[79 * 16 + 15] == 39)
        // 29.97 fps (30000/1001): frame 7 is at 0.23357 s = mel 18.69 → centre 19.
        #expect(LogMel.centerFrame(forFrame: 7, frameRateNum: 30000, den: 1001) == 19)
        #expect(mel.melWindow(forFrame: 7, frameRate: 30000.0 / 1001) == mel.melWindow(forFrame: 7, frameRateNum: 30000, den: 1001))
        // First video frame: half the window precedes the audio → floor.
        let first = mel.melWindow(forFrame: 0, frameRateNum: 25, den: 1)
        #expect(Array(first[0..<16]) == [Float](repeating: -4, count: 8) + (0..<8).map(Float.init))
        // Past the end of the track: all silence.
        let late = mel.melWindow(forFrame: 40, frameRateNum: 30, den: 1)
        #expect(late.allSatisfy { $0 == MelSpectrogram.floor })
    }

    @Test func silenceIsTheFloorAndFramesFollowTheHop() {
        let mel = MelSpectrogram().compute([Float](repeating: 0, count: 3200), firstSample: 1600)
        #expect(mel.frames == 17)
        #expect(mel.firstFrame == 8)
        #expect(mel.values.allSatisfy { $0 == MelSpectrogram.floor })
    }
}

@Suite struct ResamplerTests {
    @Test(arguments: [44100, 48000])
    func toneSurvivesAndImagesAreRejected(_ rate: Int) {
        // 1 kHz (kept) plus 12 kHz (above the 8 kHz output Nyquist: must be removed), stereo.
        let n = rate / 2
        var stereo = [Float](repeating: 0, count: 2 * n)
        for i in 0..<n {
            let t: Double = Double(i) / Double(rate)
            let low: Double = 0.5 * sin(2 * Double.pi * 1000 * t)
            let high: Double = 0.3 * sin(2 * Double.pi * 12000 * t)
            let v = Float(low + high)
            stereo[2 * i] = v
            stereo[2 * i + 1] = v
        }
        let y = AudioResampler.mono16k(interleaved: stereo, channels: 2, sampleRate: rate)
        #expect(y.count == n * 16000 / rate)
        // Compare with the ideal 1 kHz tone away from the edges.
        var err = 0.0
        for i in 400..<(y.count - 400) {
            let ideal: Double = 0.5 * sin(2 * Double.pi * 1000 * Double(i) / 16000)
            err = max(err, abs(Double(y[i]) - ideal))
        }
        #expect(err < 0.01)
    }
}
