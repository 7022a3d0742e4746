// Command target calls vulnlib's functions the way a test or benchmark asks:
//
//	target A          calls Parse and Count (inlined here) once
//	target B          calls only Other
//	target loop-A     calls Parse and Count every 100 ms until killed
//	target bench N    calls Parse N times and prints the loop's time and
//	                  the time of its last nine tenths, in ns
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/inuse-dev/inuse/bench/funcprobe/gofunc/target/vulnlib"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: target A|B|loop-A|bench N")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "A":
		fmt.Println(vulnlib.Parse("a,b"), vulnlib.Count(os.Args[0]+",x"))
	case "B":
		fmt.Println(vulnlib.Other("a,b"))
	case "loop-A":
		for {
			fmt.Println(vulnlib.Parse("a,b"), vulnlib.Count(os.Args[0]+",x"))
			time.Sleep(100 * time.Millisecond)
		}
	case "bench":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		// The first tenth covers the first call and the probe's removal;
		// the rest runs as it will for the life of the process.
		sum, start := 0, time.Now()
		var head time.Duration
		for i := 0; i < n; i++ {
			if i == n/10 {
				head = time.Since(start)
			}
			sum += vulnlib.Parse(os.Args[1])
		}
		total := time.Since(start)
		fmt.Println(total.Nanoseconds(), (total - head).Nanoseconds(), sum)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
