#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// File-system helpers of the checkpoint code, on top of Dataset/FileIO.swift.
enum CheckpointFiles {
    /// What `lstat` says is at a path (symbolic links are not followed).
    enum Kind: Equatable { case missing, file(size: Int), directory, other }

    static func kind(_ path: String) -> Kind {
        var info = stat()
        guard lstat(path, &info) == 0 else { return .missing }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .file(size: Int(info.st_size))
        case S_IFDIR: return .directory
        default: return .other
        }
    }

    static func isDirectory(_ path: String) -> Bool { kind(path) == .directory }

    /// Whether `path` is a directory or a symbolic link to one.
    static func isDirectoryFollowingLinks(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Renames `from` to `to` (atomic within one file system).
    static func rename(_ from: String, _ to: String) throws(DatasetError) {
        if systemRename(from, to) != 0 { throw DatasetError.io("rename \(from) to", to, errno: errno) }
    }

    /// Writes `bytes` to `path` itself (created or truncated) and fsyncs it; for temporary files
    /// with a fixed name, renamed into place by the caller.
    static func writeDurably(_ path: String, _ bytes: [UInt8]) throws(DatasetError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DatasetError.io("create", path, errno: errno) }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { raw in write(fd, raw.baseAddress! + done, raw.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw DatasetError.io("write", path, errno: errno)
            }
            done += n
        }
        if fsync(fd) != 0 { throw DatasetError.io("fsync", path, errno: errno) }
    }

    /// Removes `path` and everything under it (without following symbolic links); a missing
    /// path is not an error.
    static func removeTree(_ path: String) throws(DatasetError) {
        switch kind(path) {
        case .missing:
            return
        case .directory:
            for name in try directoryEntries(path) ?? [] {
                try removeTree(joinPath(path, name))
            }
            if rmdir(path) != 0 && errno != ENOENT { throw DatasetError.io("remove the directory", path, errno: errno) }
        case .file, .other:
            try removeFile(path)
        }
    }
}

private func systemRename(_ from: String, _ to: String) -> Int32 { rename(from, to) }

/// `array.withUnsafeBytes` for a closure with a typed throw (the standard library's is `rethrows`).
func withRawBytes<Element, R, E: Error>(_ array: [Element], _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
    try array.withUnsafeBytes { raw in Result { () throws(E) in try body(raw) } }.get()
}

/// `array.withUnsafeMutableBytes` for a closure with a typed throw.
func withMutableRawBytes<Element, R, E: Error>(_ array: inout [Element], _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R) throws(E) -> R {
    try array.withUnsafeMutableBytes { raw in Result { () throws(E) in try body(raw) } }.get()
}
