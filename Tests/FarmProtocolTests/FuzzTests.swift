import DubfarmCore
import Foundation
import Testing
@testable import FarmProtocol

/// One million seeded random and mutated messages through both decoders (work and control):
/// bit flips, truncation, splices of two messages, huge length fields, inserted and random
/// frames. Nothing may crash, nothing may allocate what the message does not hold, and
/// well-formed messages must still decode afterwards. Reproducible: the seed is fixed, and a
/// failure prints the iteration.
@Suite("Protocol fuzz")
struct FuzzTests {
    static let iterations = 1_000_000

    /// Small seeds keep one decode cheap (the point is the number of shapes, not their size).
    static func workSeeds() -> [[[UInt8]]] {
        var t = sampleTask()
        t.input.packets = Array(t.input.packets.prefix(4))
        t.framePTS = Array(t.framePTS.prefix(t.decodedFrames.count))
        t.audio = AudioWindow(startSample: -16, samples: (0..<32).map { Float($0) })
        return ([WorkMessage.task(t)] + allWorkMessages().filter { if case .task = $0 { false } else { true } }).map { $0.encode() }
    }

    static func controlSeeds() -> [[[UInt8]]] {
        ControlMessageTests.requests.enumerated().map { $0.element.encode(requestID: UInt64($0.offset + 1)) }
            + [ControlReply.ok(3, FetchChunk(total: 10, offset: 0, sha256: "ab"), payload: [1, 2, 3]).encode(),
               ControlReply.error(4, DubfarmError(.notFound, "job 4 does not exist")).encode()]
    }

    /// Mutates `frames` in one of several ways; `other` is a second valid message for splicing.
    static func mutate(_ frames: inout [[UInt8]], other: [[UInt8]], rng: inout SplitMix64) {
        func pick(_ n: Int) -> Int { n <= 0 ? 0 : Int(rng.next() % UInt64(n)) }
        guard !frames.isEmpty else { frames = [[UInt8(truncatingIfNeeded: rng.next())]]; return }
        let fi = pick(frames.count)
        switch rng.next() % 9 {
        case 0:  // bit flips
            for _ in 0...pick(8) where !frames[fi].isEmpty {
                frames[fi][pick(frames[fi].count)] ^= UInt8(1) << UInt8(pick(8))
            }
        case 1:  // truncation
            frames[fi] = Array(frames[fi].prefix(pick(frames[fi].count + 1)))
        case 2:  // splice: the head of one message's frame with the tail of another's
            let oi = pick(other.count)
            let cut = pick(frames[fi].count + 1), ocut = pick(other[oi].count + 1)
            frames[fi] = Array(frames[fi].prefix(cut)) + Array(other[oi].suffix(from: ocut))
            if rng.next() % 2 == 0 { frames = Array(frames.prefix(fi + 1)) + Array(other.dropFirst(fi + 1)) }
        case 3:  // huge or negative length fields in binary frames
            guard frames[fi].count >= 4 else { frames[fi] = [0xff, 0xff, 0xff, 0xff]; return }
            let at = pick(frames[fi].count - 3)
            let v: UInt32 = [0xffff_ffff, 0x7fff_ffff, 0x8000_0000, 0x0100_0000, UInt32(frames[fi].count + 1)][pick(5)]
            for k in 0..<4 { frames[fi][at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) }
        case 4:  // huge numbers in JSON headers
            let big = Array(["99999999999999999999999", "-9223372036854775808", "1e308", "4294967296", "-1"][pick(5)].utf8)
            let isDigit = { (b: UInt8) in b >= 0x30 && b <= 0x39 }
            if let start = frames[fi].firstIndex(where: isDigit) {
                let end = frames[fi][start...].firstIndex { !isDigit($0) } ?? frames[fi].endIndex
                frames[fi].replaceSubrange(start..<end, with: big)
            } else {
                frames[fi].append(contentsOf: big)
            }
        case 5:  // drop, duplicate or swap frames
            switch rng.next() % 3 {
            case 0 where frames.count > 1: frames.remove(at: fi)
            case 1: frames.insert(frames[fi], at: pick(frames.count + 1))
            default: frames.swapAt(fi, pick(frames.count))
            }
        case 6:  // random bytes inserted
            let bytes = (0..<(1 + pick(16))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            frames[fi].insert(contentsOf: bytes, at: pick(frames[fi].count + 1))
        case 7:  // a frame replaced by random bytes
            frames[fi] = (0..<pick(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        default:  // entirely random message after a valid protocol frame
            frames = [frames[0]] + (0..<pick(7)).map { _ in (0..<pick(48)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        }
    }

    @Test("one million random and mutated messages: no crash, bounded memory, valid messages still decode")
    func millionMessages() throws {
        var rng = SplitMix64(seed: 0xd0bf_a53e)
        let work = Self.workSeeds(), control = Self.controlSeeds()
        var limits = ProtocolLimits()
        limits.maxHeaderBytes = 64 << 10
        limits.maxPayloadBytes = 1 << 20
        limits.maxMessageBytes = 1 << 20
        let rssBefore = residentBytes()
        var accepted = 0, refused = 0
        let started = ContinuousClock.now
        for i in 0..<Self.iterations {
            let useWork = i % 2 == 0
            let seeds = useWork ? work : control
            var frames = seeds[Int(rng.next() % UInt64(seeds.count))]
            let other = (rng.next() % 2 == 0 ? work : control)[Int(rng.next() % UInt64(min(work.count, control.count)))]
            // One to three stacked mutations.
            for _ in 0...(rng.next() % 3) { Self.mutate(&frames, other: other, rng: &rng) }
            let ok: Bool
            if useWork {
                ok = (try? WorkMessage.decode(frames, limits: limits)) != nil
            } else if i % 4 == 1 {
                ok = (try? ControlRequest.decode(frames, limits: limits)) != nil
            } else {
                ok = (try? ControlReply.decode(frames, limits: limits)).map { r in (try? r.value(FetchChunk.self)) != nil } ?? false
            }
            if ok { accepted += 1 } else { refused += 1 }
        }
        let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18 + Double((ContinuousClock.now - started).components.seconds)
        let grown = residentBytes() - rssBefore
        print("fuzz: \(Self.iterations) messages in \(String(format: "%.1f", seconds)) s, \(refused) refused, \(accepted) accepted, resident memory grew \(grown >> 20) MiB")
        #expect(accepted + refused == Self.iterations)
        #expect(refused > Self.iterations / 2, "most mutations must be refused")
        // Nothing is retained: a decoder that allocated what a huge length field claims would have
        // grown by gigabytes (or died). Generous: other suites run in this process at the same time.
        #expect(grown < 1 << 30, "resident memory grew \(grown >> 20) MiB")
        // The decoders are unchanged by what they saw.
        for m in allWorkMessages() { #expect(try WorkMessage.decode(m.encode(), limits: limits) == m) }
        for r in ControlMessageTests.requests { #expect(try ControlRequest.decode(r.encode(requestID: 9), limits: limits).1 == r) }
    }

    @Test("length fields that claim more than the message holds are refused before allocation")
    func hugeLengths() throws {
        var t = sampleTask()
        t.input.packets = Array(t.input.packets.prefix(2))
        let good = WorkMessage.task(t).encode()
        // Packet count, packet size and float count set to 4 G: refused, not allocated.
        var w = ByteWriter(capacity: 8)
        w.u32(0xffff_ffff)
        let huge = w.bytes
        var audio = good
        audio[4] = huge + Array(repeating: 0, count: 8)
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(audio) }
        var bundle = good
        // The packet count sits right after the codec parameters; overwrite every aligned u32 in turn.
        var refused = 0
        for at in stride(from: 6, to: bundle[3].count - 4, by: 1) {
            var f = good[3]
            f.replaceSubrange(at..<at + 4, with: huge)
            bundle[3] = f
            if (try? WorkMessage.decode(bundle)) == nil { refused += 1 }
        }
        #expect(refused > 0)
    }

    @Test("a message above limits.max_message_bytes is refused by the codec before it is parsed")
    func wholeMessageLimit() throws {
        var limits = ProtocolLimits()
        limits.maxMessageBytes = 4096
        let chunk = ControlRequest.uploadChunk(id: "u", offset: 0, data: Array(repeating: 7, count: 5000)).encode(requestID: 1)
        #expect { try ControlRequest.decode(chunk, limits: limits) } throws: { e in
            (e as? DubfarmError)?.message.contains("limits.max_message_bytes") == true
        }
        let small = ControlRequest.uploadChunk(id: "u", offset: 0, data: Array(repeating: 7, count: 100)).encode(requestID: 1)
        #expect(throws: Never.self) { try ControlRequest.decode(small, limits: limits) }
        var t = sampleTask()
        t.audio = AudioWindow(startSample: 0, samples: Array(repeating: 0, count: 2000))
        #expect(throws: DubfarmError.self) { try WorkMessage.decode(WorkMessage.task(t).encode(), limits: limits) }
    }
}

/// This process's resident memory (VmRSS), bytes.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}
