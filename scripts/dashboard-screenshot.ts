// Screenshots a running coordinator's dashboard with headless Debian chromium, once the
// page shows at least --epochs finished epochs (for the README).
// Usage: node dist/scripts/dashboard-screenshot.js <url with ?token=> <out.png> [epochs]
import puppeteer from 'puppeteer-core';

const [url, out, epochs = '2'] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: dashboard-screenshot <url> <out.png> [epochs]');
  process.exit(2);
}
const browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1300, height: 940 });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction((n) => Number(document.getElementById('app')?.dataset.epochs ?? 0) >= n, { timeout: 600_000, polling: 500 }, Number(epochs));
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await page.screenshot({ path: out, type: 'png' });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}
