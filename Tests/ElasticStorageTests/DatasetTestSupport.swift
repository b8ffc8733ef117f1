import ElasticCore
import ElasticStorage
import Foundation
import ElasticTestSupport
import Testing

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init(_ label: String = #function) throws {
        let clean = label.filter { $0.isLetter || $0.isNumber }
        var template = Array("\(NSTemporaryDirectory())/elastic-dataset-\(clean.prefix(40))-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw DatasetError(.ioError, "mkdtemp failed: \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs python3 with `arguments`; fails the test (never passes silently) when python3 or
/// numpy is missing or the script fails.
@discardableResult
func runPython(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) -> (ok: Bool, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3"] + arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    do {
        try process.run()
    } catch {
        Issue.record("cannot run python3 (\(error)): install python3 and numpy to run the W1 reference comparison", sourceLocation: sourceLocation)
        return (false, "")
    }
    let output = out.fileHandleForReading.readDataToEndOfFile()
    let errors = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let stderrText = String(decoding: errors, as: UTF8.self)
    guard process.terminationStatus == 0 else {
        let hint = stderrText.contains("No module named") ? " (is numpy installed? pip install numpy)" : ""
        Issue.record("python3 \(arguments.prefix(2).joined(separator: " ")) exited with \(process.terminationStatus)\(hint): \(stderrText)", sourceLocation: sourceLocation)
        return (false, stderrText)
    }
    return (true, String(decoding: output, as: UTF8.self))
}

let w1ReferenceScript = (try? W1Reference.scriptPath()) ?? "reference/w1.py"

func readBytes(_ path: String) -> [UInt8] {
    (try? Array(Data(contentsOf: URL(fileURLWithPath: path)))) ?? []
}

func writeBytes(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func littleEndianBytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian) { Array($0) } }
}

func littleEndianBytes(_ values: [Int32]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
}

/// Expects `body` to throw a DatasetError with `code` whose message mentions `mentioning`.
func expectDatasetError<T>(_ code: DatasetError.Code, mentioning: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) {
    do {
        _ = try body()
        Issue.record("expected a \(code) error mentioning '\(mentioning)', but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as DatasetError {
        #expect(error.code == code, "got \(error.code): \(error.message)", sourceLocation: sourceLocation)
        #expect(error.message.contains(mentioning), "the message should mention '\(mentioning)': \(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a DatasetError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// A small seeded data set: features are distinct per (sample, feature), labels cycle.
func sampleData(count: Int, features: Int, classes: Int, seed: UInt64) -> LabelledSamples {
    var rng = SplitMix64(seed: seed)
    func next() -> UInt64 { rng.next() }
    let values = (0..<count * features).map { i in Float(i) + Float(Double(next() >> 40) * 0x1p-24) }
    let labels = (0..<count).map { _ in Int32(next() % UInt64(classes)) }
    return LabelledSamples(featureCount: features, classes: classes, features: values, labels: labels)
}
