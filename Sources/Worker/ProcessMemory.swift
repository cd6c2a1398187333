#if os(Linux)
import CMalloc
#endif
import Foundation
import Logging
import Synchronization

/// This process's memory, as the kernel counts it (resident now and at its peak) and as glibc's
/// allocator holds it (bytes in use by the program, and bytes freed but kept in its arenas).
///
/// A worker logs one after every segment (debug level, `segment memory`), so the growth of a
/// long job's memory, or its absence, can be read from the log (`tools/bench/memory.sh`).
package struct ProcessMemory: Sendable, Hashable {
    /// Resident set size (VmRSS), bytes.
    package var residentBytes: Int
    /// Peak resident set size since the process started (VmHWM), bytes.
    package var peakResidentBytes: Int
    /// Bytes the program has allocated through malloc and not freed, over all arenas, including
    /// chunks malloc served with mmap of their own (mallinfo2 `uordblks + hblkhd`); 0 off glibc.
    package var mallocInUseBytes: Int
    /// Bytes freed by the program but still held by the allocator in its arenas (mallinfo2
    /// `fordblks`): memory the kernel may still count as resident until it is trimmed.
    package var mallocFreeBytes: Int

    package init(residentBytes: Int, peakResidentBytes: Int, mallocInUseBytes: Int, mallocFreeBytes: Int) {
        self.residentBytes = residentBytes
        self.peakResidentBytes = peakResidentBytes
        self.mallocInUseBytes = mallocInUseBytes
        self.mallocFreeBytes = mallocFreeBytes
    }

    /// The figures now (zero for what this platform cannot tell).
    package static func current() -> ProcessMemory {
        let status = readProcFile("/proc/self/status")
        var m = ProcessMemory(residentBytes: statusField("VmRSS", in: status) ?? 0,
                              peakResidentBytes: statusField("VmHWM", in: status) ?? 0,
                              mallocInUseBytes: 0, mallocFreeBytes: 0)
        #if os(Linux)
        let info = mallinfo2()
        m.mallocInUseBytes = Int(info.uordblks) + Int(info.hblkhd)
        m.mallocFreeBytes = Int(info.fordblks)
        #endif
        return m
    }

    /// A /proc file's text (they report size 0, so it is read until end of file; "" when unreadable).
    static func readProcFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A `kB` field of `/proc/PID/status` text (`VmRSS:   12345 kB`), in bytes.
    static func statusField(_ name: String, in text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let fields = line.dropFirst(name.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let kB = fields.first.flatMap({ Int($0) }) else { return nil }
            return kB * 1024
        }
        return nil
    }

    /// Hands the allocator's free memory back to the kernel: every arena's free pages, not only
    /// the top of the main heap (glibc `malloc_trim(0)`). Returns whether anything was released.
    @discardableResult
    package static func trimAllocator() -> Bool {
        #if os(Linux)
        return malloc_trim(0) != 0
        #else
        return false
        #endif
    }

    /// The mmap threshold a worker fixes (``tuneAllocator(mmapThreshold:)``): every allocation of
    /// this size or more (video frames, codec buffers, the model's scratch blocks) gets pages of its
    /// own, which go back to the kernel when it is freed.
    package static let workerMMapThreshold = 512 << 10

    /// Fixes glibc's mmap threshold at `mmapThreshold` bytes (`mallopt(M_MMAP_THRESHOLD)`).
    ///
    /// glibc starts at 128 KiB and raises the threshold to the size of each mmapped block freed,
    /// up to 32 MiB; after that, a worker's frame-sized buffers (2 MiB for an 844×844 RGB frame)
    /// come from the arenas of whichever threads allocate them (a new segment thread, new
    /// decoder and encoder threads per segment), where freed memory stays resident, and the
    /// worker's memory grows over its first segments before it levels off (docs/benchmarks.md).
    /// A fixed threshold keeps it at what one segment needs. Returns false where the threshold is
    /// left as it is: off glibc, or when the environment sets it (`MALLOC_MMAP_THRESHOLD_`,
    /// `GLIBC_TUNABLES=…mmap_threshold…`), which wins.
    @discardableResult
    package static func tuneAllocator(mmapThreshold: Int = workerMMapThreshold) -> Bool {
        #if os(Linux)
        let env = ProcessInfo.processInfo.environment
        if env["MALLOC_MMAP_THRESHOLD_"] != nil || (env["GLIBC_TUNABLES"] ?? "").contains("mmap_threshold") { return false }
        return mallopt(M_MMAP_THRESHOLD, Int32(mmapThreshold)) == 1
        #else
        return false
        #endif
    }

    /// The figures in MiB, one decimal, as log metadata.
    package var logMetadata: Logger.Metadata {
        func mib(_ b: Int) -> Logger.MetadataValue { .string(String(format: "%.1f", Double(b) / 1_048_576)) }
        return ["rss_mib": mib(residentBytes), "peak_rss_mib": mib(peakResidentBytes),
                "malloc_in_use_mib": mib(mallocInUseBytes), "malloc_free_mib": mib(mallocFreeBytes)]
    }
}

/// Peak resident memory segment by segment. The kernel keeps one peak per process (VmHWM), which
/// Linux lets a process reset (`5` written to `/proc/self/clear_refs`); this folds the peak so
/// far into the process's own before each reset, so both the peak of the segment at hand and the
/// process's peak since it started can be read.
package final class SegmentPeaks: Sendable {
    private let earlier = Atomic<Int>(0)
    private let resets = Atomic<Bool>(false)

    package init() {}

    /// Starts a segment: the peak so far is kept, the kernel's is reset to the current resident size.
    package func startSegment() {
        earlier.max(ProcessMemory.current().peakResidentBytes)
        let fd = open("/proc/self/clear_refs", O_WRONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let ok = write(fd, "5", 1) == 1
        resets.store(ok, ordering: .relaxed)
    }

    /// The peak since ``startSegment()`` (nil where the kernel's peak cannot be reset) and the
    /// process's peak since it started, bytes, given a ``ProcessMemory`` read now.
    package func peaks(_ now: ProcessMemory) -> (segment: Int?, process: Int) {
        let hwm = now.peakResidentBytes
        return (resets.load(ordering: .relaxed) ? hwm : nil, max(earlier.load(ordering: .relaxed), hwm))
    }
}

extension Atomic where Value == Int {
    fileprivate func max(_ v: Int) {
        var current = load(ordering: .relaxed)
        while v > current {
            let (exchanged, original) = compareExchange(expected: current, desired: v, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}
