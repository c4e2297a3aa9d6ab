// golumberjack writes the lines it reads on stdin through the real lumberjack.v2 Logger,
// one Write per line, exactly as kube-apiserver's log backend does (fmt.Fprint per event).
// Built by tests/support/golumberjack.py for the follower's integration test.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"

	"gopkg.in/natefinch/lumberjack.v2"
)

func main() {
	path := flag.String("path", "", "file to write (required)")
	maxSize := flag.Int("maxsize", 1, "MaxSize in megabytes")
	maxBackups := flag.Int("maxbackups", 0, "MaxBackups")
	maxAge := flag.Int("maxage", 0, "MaxAge in days")
	compress := flag.Bool("compress", false, "Compress")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "golumberjack: -path is required")
		os.Exit(2)
	}
	logger := &lumberjack.Logger{Filename: *path, MaxSize: *maxSize, MaxBackups: *maxBackups,
		MaxAge: *maxAge, Compress: *compress}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadString('\n')
		if len(line) > 0 {
			if _, werr := fmt.Fprint(logger, line); werr != nil {
				fmt.Fprintln(os.Stderr, "golumberjack:", werr)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "golumberjack:", err)
			os.Exit(1)
		}
	}
	if err := logger.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "golumberjack:", err)
		os.Exit(1)
	}
}
