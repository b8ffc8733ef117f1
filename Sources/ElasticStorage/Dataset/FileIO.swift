#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file opened for reading, closed on deinit. Reads loop over short reads and EINTR.
final class ReadableFile {
    let path: String
    let descriptor: Int32
    /// The length when opened.
    let length: Int

    /// Opens a regular file; `missing` is the error for a file that does not exist.
    init(path: String, missing: (String) -> DatasetError) throws(DatasetError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw missing(path) }
            throw DatasetError.io("open", path, errno: code)
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let code = errno
            close(fd)
            throw DatasetError.io("stat", path, errno: code)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw DatasetError(.ioError, "\(path) is not a regular file", path: path)
        }
        descriptor = fd
        length = Int(info.st_size)
    }

    deinit { close(descriptor) }

    /// Reads up to `buffer.count` bytes at `offset`; returns how many were read (fewer only at
    /// the end of the file).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(DatasetError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, min(buffer.count - done, 1 << 30), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw DatasetError.io("read", path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads exactly `buffer.count` bytes at `offset` or throws `.truncated`.
    func readExactly(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(DatasetError) {
        let n = try read(into: buffer, at: offset)
        guard n == buffer.count else {
            throw DatasetError(.truncated, "\(path) ended after \(offset + n) bytes, before the \(offset + buffer.count) expected: the file is truncated (or shrank while being read)", path: path)
        }
    }

    func readBytes(count: Int, at offset: Int) throws(DatasetError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBufferPointer { (buffer) throws(DatasetError) in try read(into: UnsafeMutableRawBufferPointer(buffer), at: offset) }
        bytes.removeSubrange(n...)
        return bytes
    }
}

/// Reads a whole small file (manifests), refusing anything over `limit` bytes.
func readSmallFile(_ path: String, limit: Int, missing: (String) -> DatasetError) throws(DatasetError) -> [UInt8] {
    let file = try ReadableFile(path: path, missing: missing)
    guard file.length <= limit else {
        throw DatasetError(.tooLarge, "\(path) is \(file.length) bytes, more than the \(limit) allowed: it is not a manifest this build wrote", path: path)
    }
    return try file.readBytes(count: file.length, at: 0)
}

/// A file written under a temporary name in its final directory, then fsynced and renamed
/// into place, so that readers see either nothing or the whole file.
struct AtomicFileWriter {
    let path: String
    let temporaryPath: String
    private var descriptor: Int32

    /// `uniqueTemporaryName` adds a random suffix to the temporary name, for files that several
    /// threads of one process may write at once (the default name is unique per process only).
    /// `mode`: the new file's permissions (0600 for files that hold secrets or their hashes).
    init(path: String, uniqueTemporaryName: Bool = false, mode: mode_t = 0o644) throws(DatasetError) {
        self.path = path
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let suffix = uniqueTemporaryName ? "-" + String(UInt64.random(in: 0...UInt64.max), radix: 16) : ""
        temporaryPath = "\(directory).\(name).tmp-\(getpid())\(suffix)"
        unlink(temporaryPath)
        let fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw DatasetError.io("create", temporaryPath, errno: errno) }
        descriptor = fd
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(DatasetError) {
        var done = 0
        while done < bytes.count {
            let n = systemWrite(descriptor, bytes.baseAddress! + done, min(bytes.count - done, 1 << 30))
            if n < 0 {
                if errno == EINTR { continue }
                let code = errno
                abandon()
                throw DatasetError.io("write", temporaryPath, errno: code)
            }
            done += n
        }
    }

    /// Starts writing the file's pages back without waiting, so that a later `commit` finds
    /// little left to flush: on Linux `POSIX_FADV_DONTNEED` starts asynchronous writeback of the
    /// dirty pages (and lets the page cache drop them once clean); elsewhere a no-op.
    func startWriteback() {
        #if os(Linux)
        _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
        #endif
    }

    /// fsync, close, rename over `path`.
    func commit() throws(DatasetError) {
        if fsync(descriptor) != 0 {
            let code = errno
            abandon()
            throw DatasetError.io("fsync", temporaryPath, errno: code)
        }
        close(descriptor)
        if rename(temporaryPath, path) != 0 {
            let code = errno
            unlink(temporaryPath)
            throw DatasetError.io("rename \(temporaryPath) to", path, errno: code)
        }
    }

    /// Closes and removes the temporary file.
    func abandon() {
        close(descriptor)
        unlink(temporaryPath)
    }
}

private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}

/// fsyncs a directory so that renames in it are durable.
func syncDirectory(_ path: String) throws(DatasetError) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw DatasetError.io("open the directory", path, errno: errno) }
    defer { close(fd) }
    if fsync(fd) != 0 && errno != EINVAL {
        throw DatasetError.io("fsync the directory", path, errno: errno)
    }
}

/// Creates `path` and its parents (mode 0755) as needed.
func makeDirectories(_ path: String) throws(DatasetError) {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
        prefix += component
        var info = stat()
        if stat(prefix, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFDIR else {
                throw DatasetError(.ioError, "cannot create the directory \(path): \(prefix) is a file", path: path)
            }
        } else if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
            throw DatasetError.io("create the directory", prefix, errno: errno)
        }
        prefix += "/"
    }
}

/// The names in a directory (without "." and ".."), or nil when it does not exist.
func directoryEntries(_ path: String) throws(DatasetError) -> [String]? {
    guard let dir = opendir(path) else {
        if errno == ENOENT { return nil }
        throw DatasetError.io("list", path, errno: errno)
    }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

func fileExists(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0
}

func removeFile(_ path: String) throws(DatasetError) {
    if unlink(path) != 0 && errno != ENOENT { throw DatasetError.io("remove", path, errno: errno) }
}

/// `directory/name`, without doubling a trailing slash.
func joinPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}
