package bench

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

// WriteOutputs writes table.txt, results.json and chart.png into dir.
func WriteOutputs(r *Results, dir string) error {
	if r.Summary == nil {
		r.Summarize()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "table.txt"))
	if err != nil {
		return err
	}
	r.WriteTable(f)
	if err := f.Close(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(jsonSafe(r), "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if md := r.ConsoleMarkdown(); md != "" {
		if err := os.WriteFile(filepath.Join(dir, "console.md"), []byte(md), 0o644); err != nil {
			return err
		}
	}
	return writeChart(r.Summary, r.Flows, filepath.Join(dir, "chart.png"))
}

// jsonSafe replaces NaN and Inf (no JSON form) in the summary by zero
// counts: a Stat with N == 0 means "no valid sample".
func jsonSafe(r *Results) *Results {
	c := *r
	s := *r.Summary
	fix := func(x *Stat) {
		if math.IsNaN(x.Median) || math.IsInf(x.Median, 0) {
			*x = Stat{}
		}
	}
	s.Paths = append([]PathSummary(nil), s.Paths...)
	for i := range s.Paths {
		p := &s.Paths[i]
		for _, x := range []*Stat{&p.Gbps1, &p.GbpsN, &p.CPS, &p.TTFBp50, &p.TTFBp99, &p.AddedP50, &p.AddedP99, &p.GWCPUPerGB, &p.MachCPUPerGB} {
			fix(x)
		}
	}
	s.DNS = append([]DNSSummary(nil), s.DNS...)
	for i := range s.DNS {
		for _, x := range []*Stat{&s.DNS[i].QPS, &s.DNS[i].P50us, &s.DNS[i].P99us} {
			fix(x)
		}
	}
	s.Verdicts = append([]Verdict(nil), s.Verdicts...)
	for i := range s.Verdicts {
		v := &s.Verdicts[i]
		if math.IsNaN(v.Median) || math.IsInf(v.Median, 0) {
			v.Median = 0
		}
		rs := make([]float64, 0, len(v.Ratios))
		for _, x := range v.Ratios {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				rs = append(rs, x)
			}
		}
		v.Ratios = rs
	}
	c.Summary = &s
	return &c
}

// Colours of the chart.
var (
	bgColour    = color.RGBA{255, 255, 255, 255}
	textColour  = color.RGBA{30, 30, 30, 255}
	gridColour  = color.RGBA{225, 225, 225, 255}
	barColour   = color.RGBA{120, 144, 170, 255}
	csColour    = color.RGBA{0, 122, 204, 255}
	whiskColour = color.RGBA{40, 40, 40, 255}
)

// writeChart draws three panels of horizontal bars (throughput with 1 and
// n flows, new HTTPS connections per second), one bar per path with its
// median and a whisker for the min–max spread.
func writeChart(s *Summary, flows int, path string) error {
	type panel struct {
		title string
		pick  func(PathSummary) Stat
		unit  string
		prec  int
	}
	panels := []panel{
		{"THROUGHPUT, 1 FLOW", func(p PathSummary) Stat { return p.Gbps1 }, "GBIT/S", 1},
		{fmt.Sprintf("THROUGHPUT, %d FLOWS", flows), func(p PathSummary) Stat { return p.GbpsN }, "GBIT/S", 1},
		{"NEW HTTPS CONNECTIONS", func(p PathSummary) Stat { return p.CPS }, "PER S", 0},
	}
	const (
		scale   = 2
		labelW  = 20 * 6 * scale
		barMaxW = 360
		rowH    = 26
		panelW  = labelW + barMaxW + 150
		titleH  = 40
	)
	h := titleH + len(s.Paths)*rowH + 30
	img := image.NewRGBA(image.Rect(0, 0, panelW*len(panels), h+30))
	fillRect(img, 0, 0, img.Bounds().Dx(), img.Bounds().Dy(), bgColour)
	for pi, pn := range panels {
		x0 := pi * panelW
		drawText(img, x0+10, 10, pn.title+" ("+pn.unit+")", scale, textColour)
		top := 0.0
		for _, p := range s.Paths {
			st := pn.pick(p)
			if !math.IsNaN(st.Max) {
				top = math.Max(top, st.Max)
			}
		}
		if top <= 0 {
			top = 1
		}
		for g := 0; g <= 4; g++ {
			gx := x0 + labelW + g*barMaxW/4
			fillRect(img, gx, titleH, 1, len(s.Paths)*rowH, gridColour)
		}
		for i, p := range s.Paths {
			y := titleH + i*rowH
			drawText(img, x0+10, y+6, p.Path, scale, textColour)
			st := pn.pick(p)
			if math.IsNaN(st.Median) {
				drawText(img, x0+labelW+4, y+6, "N/A", scale, textColour)
				continue
			}
			c := barColour
			if p.Path == PSteered || p.Path == PBypass {
				c = csColour
			}
			w := int(st.Median / top * barMaxW)
			fillRect(img, x0+labelW, y+4, w, rowH-8, c)
			lo, hi := int(st.Min/top*barMaxW), int(st.Max/top*barMaxW)
			fillRect(img, x0+labelW+lo, y+rowH/2-1, max(hi-lo, 1), 2, whiskColour)
			fillRect(img, x0+labelW+lo, y+7, 2, rowH-14, whiskColour)
			fillRect(img, x0+labelW+hi-1, y+7, 2, rowH-14, whiskColour)
			drawText(img, x0+labelW+max(w, hi)+8, y+6, fmt.Sprintf("%.*f", pn.prec, st.Median), scale, textColour)
		}
	}
	drawText(img, 10, h, "MEDIAN OF THE ROUNDS, WHISKER = MIN-MAX. CLOUDSTEER IN BLUE.", scale, textColour)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("encode chart: %w", err)
	}
	return f.Close()
}
