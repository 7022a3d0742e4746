// Command target calls vulnlib's functions the way a test or benchmark asks:
//
//	target A          calls Parse and Count (inlined here) once
//	target B          calls only Other
//	target loop-A     calls Parse and Count every 100 ms until killed
//	target bench N    calls Parse N times
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
		sum := 0
		for i := 0; i < n; i++ {
			sum += vulnlib.Parse(os.Args[1])
		}
		fmt.Println(sum)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
