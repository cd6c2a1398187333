import Foundation
import Testing
@testable import Worker

/// ``ProcessMemory`` and ``SegmentPeaks``: the figures a worker logs after every segment.
/// (Other suites run in this process at the same time, so only lower bounds are checked.)
@Suite("Process memory")
struct ProcessMemoryTests {
    @Test("a /proc/PID/status field is read in bytes, tab or spaces after the colon; a missing one is nil")
    func statusField() {
        let text = "Name:\tdubfarm\nVmHWM:\t  523456 kB\nVmRSS:    1024 kB\nThreads:\t7\n"
        #expect(ProcessMemory.statusField("VmHWM", in: text) == 523_456 * 1024)
        #expect(ProcessMemory.statusField("VmRSS", in: text) == 1024 * 1024)
        #expect(ProcessMemory.statusField("VmSwap", in: text) == nil)
    }

    #if os(Linux)
    @Test("this process's figures: resident and peak from /proc, malloc'd bytes from glibc; trimming and tuning succeed")
    func currentFigures() {
        let m = ProcessMemory.current()
        #expect(m.residentBytes > 1 << 20 && m.peakResidentBytes >= m.residentBytes, "\(m)")
        let block = UnsafeMutableRawPointer.allocate(byteCount: 32 << 20, alignment: 64)
        defer { block.deallocate() }
        #expect(ProcessMemory.current().mallocInUseBytes >= 32 << 20, "a 32 MiB block counts as in use")
        _ = ProcessMemory.trimAllocator()
        #expect(ProcessMemory.tuneAllocator(mmapThreshold: ProcessMemory.workerMMapThreshold)
                || ProcessInfo.processInfo.environment["MALLOC_MMAP_THRESHOLD_"] != nil)
        let meta = m.logMetadata
        #expect(Set(meta.keys) == ["rss_mib", "peak_rss_mib", "malloc_in_use_mib", "malloc_free_mib"])
    }

    @Test("the peak while a segment runs covers memory touched in it; the process's peak keeps the one from before the reset")
    func segmentPeaks() {
        let peaks = SegmentPeaks()
        let earlier = ProcessMemory.current().peakResidentBytes
        peaks.startSegment()
        let n = 48 << 20
        let block = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
        block.initializeMemory(as: UInt8.self, repeating: 1, count: n)
        let during = ProcessMemory.current().residentBytes
        block.deallocate()
        let (segment, process) = peaks.peaks(ProcessMemory.current())
        // The kernel's resident counters are cached per thread (synced every 64 page faults or so):
        // figures read at different moments may disagree by a fraction of a MiB.
        let slack = 2 << 20
        #expect(process >= earlier, "the process's peak \(process >> 20) MiB lost the one before the reset, \(earlier >> 20) MiB")
        #expect(process + slack >= during)
        if let segment {
            #expect(segment + slack >= during, "segment peak \(segment >> 20) MiB, resident with the block \(during >> 20) MiB")
            #expect(process >= segment)
        }
    }
    #endif
}
