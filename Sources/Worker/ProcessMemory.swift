#if os(Linux)
import CMalloc
#endif
import Foundation
import Logging

/// This process's memory, as the kernel counts it (resident now and at its peak) and as glibc's
/// allocator holds it (bytes in use by the program, and bytes freed but kept in its arenas).
///
/// A worker logs one after every segment (debug level, `segment memory`), so the growth of a
/// long job's memory, or its absence, can be read from the log (`tools/bench/memory.sh`).
public struct ProcessMemory: Sendable, Hashable {
    /// Resident set size (VmRSS), bytes.
    public var residentBytes: Int
    /// Peak resident set size since the process started (VmHWM), bytes.
    public var peakResidentBytes: Int
    /// Bytes the program has allocated through malloc and not freed, over all arenas, including
    /// chunks malloc served with mmap of their own (mallinfo2 `uordblks + hblkhd`); 0 off glibc.
    public var mallocInUseBytes: Int
    /// Bytes freed by the program but still held by the allocator in its arenas (mallinfo2
    /// `fordblks`): memory the kernel may still count as resident until it is trimmed.
    public var mallocFreeBytes: Int

    public init(residentBytes: Int, peakResidentBytes: Int, mallocInUseBytes: Int, mallocFreeBytes: Int) {
        self.residentBytes = residentBytes
        self.peakResidentBytes = peakResidentBytes
        self.mallocInUseBytes = mallocInUseBytes
        self.mallocFreeBytes = mallocFreeBytes
    }

    /// The figures now (zero for what this platform cannot tell).
    public static func current() -> ProcessMemory {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
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

    /// A `kB` field of `/proc/PID/status` text (`VmRSS:   12345 kB`), in bytes.
    static func statusField(_ name: String, in text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let fields = line.dropFirst(name.count + 1).split(separator: " ", omittingEmptySubsequences: true)
            guard let kB = fields.first.flatMap({ Int($0) }) else { return nil }
            return kB * 1024
        }
        return nil
    }

    /// Hands the allocator's free memory back to the kernel: every arena's free pages, not only
    /// the top of the main heap (glibc `malloc_trim(0)`). Returns whether anything was released.
    @discardableResult
    public static func trimAllocator() -> Bool {
        #if os(Linux)
        return malloc_trim(0) != 0
        #else
        return false
        #endif
    }

    /// The figures in MiB, one decimal, as log metadata.
    public var logMetadata: Logger.Metadata {
        func mib(_ b: Int) -> Logger.MetadataValue { .string(String(format: "%.1f", Double(b) / 1_048_576)) }
        return ["rss_mib": mib(residentBytes), "peak_rss_mib": mib(peakResidentBytes),
                "malloc_in_use_mib": mib(mallocInUseBytes), "malloc_free_mib": mib(mallocFreeBytes)]
    }
}
