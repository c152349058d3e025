// Opens a study in the real OHIF viewer (the @ohif/app build) in headless Chromium, loads an SR series
// into the viewport, accepts OHIF's offer to track (hydrate) its measurements, opens the measurement
// panel, and prints what the page showed: JSON {errors, warnings, steps, srViewport, tracked}.
//
// Usage: node ohif_headless.mjs VIEWER_URL SERIES_LABEL [view]
//   VIEWER_URL    http://host:port/viewer?StudyInstanceUIDs=...
//   SERIES_LABEL  the start of the SR series' description in the study browser
//   view          only load the SR into the viewport (no tracking)
// Environment: CHROMIUM (default /usr/bin/chromium), SHOT (optional screenshot path).
import puppeteer from 'puppeteer-core';

const [url, label, mode] = process.argv.slice(2);
const out = { errors: [], warnings: [], steps: [] };
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // software WebGL: cornerstone renders through WebGL, there is no GPU here
  args: ['--no-sandbox', '--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1600, height: 1000 });
  page.on('pageerror', (e) => out.errors.push(String((e && e.stack) || e).slice(0, 800)));
  page.on('console', (m) => {
    if (['error', 'warn', 'warning'].includes(m.type())) out.warnings.push(m.text().slice(0, 400));
  });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const byText = (t) =>
    page.evaluateHandle(
      (t) => [...document.querySelectorAll('body *')].reverse()
        .find((e) => e.childElementCount === 0 && e.textContent.trim().startsWith(t)),
      t,
    );
  const click = async (what, find, ms, count = 1) => {
    for (let waited = 0; waited <= ms; waited += 500) {
      const handle = await find();
      const el = handle && handle.asElement ? handle.asElement() : null;
      if (el) {
        await el.click({ count });
        out.steps.push(`clicked ${what}`);
        return true;
      }
      await sleep(500);
    }
    out.steps.push(`not found: ${what}`);
    return false;
  };
  const clickText = (t, ms, count) => click(t, () => byText(t), ms, count);
  const clickCy = (cy, ms) => click(cy, () => page.$(`[data-cy="${cy}"]`), ms);
  const text = () => page.evaluate(() => document.body.innerText);

  await page.goto(url, { waitUntil: 'networkidle2', timeout: 120000 });
  await clickText('Skip all', 5000);
  await clickText('Confirm and hide', 3000);
  await clickText(label, 30000, 2); // double-click: load the SR into the viewport
  await sleep(8000);
  out.srViewport = await text();
  if (mode !== 'view') {
    await clickText('Yes', 30000); // "Do you want to continue tracking measurements for this study?"
    await sleep(6000);
    await clickCy('side-panel-header-right', 5000);
    await sleep(1000);
    await clickCy('trackedMeasurements-btn', 5000);
    await sleep(3000);
    out.tracked = await text();
  }
  if (process.env.SHOT) await page.screenshot({ path: process.env.SHOT });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
