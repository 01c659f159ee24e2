#!/usr/bin/env bash
# Install the Debian / Ubuntu font packages behind the shipped `letters-fconv` kernel set: with
# them (and matplotlib's bundled fonts) `dwp data render-letters` finds 1331 usable fonts, many
# of them decorative, as in notMNIST. Needs root (apt-get). Nothing else in dwp needs them: the
# `letters` dataset renders from whatever fonts a machine has.
set -euo pipefail
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    fonts-3270 fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-gillius \
    fonts-adf-ikarius fonts-adf-irianis fonts-adf-libris fonts-adf-mekanus fonts-adf-oldania \
    fonts-adf-romande fonts-adf-solothurn fonts-adf-switzera fonts-adf-tribun \
    fonts-adf-universalis fonts-adf-verana fonts-aenigma fonts-agave fonts-allerta \
    fonts-anonymous-pro fonts-arapey fonts-averia-gwf fonts-averia-sans-gwf \
    fonts-averia-serif-gwf fonts-b612 fonts-bebas-neue fonts-blankenburg fonts-breip \
    fonts-cabin fonts-cabinsketch fonts-campania fonts-cardo fonts-century-catalogue \
    fonts-cherrybomb fonts-clear-sans fonts-comfortaa fonts-comic-neue fonts-courier-prime \
    fonts-creep2 fonts-crosextra-caladea fonts-crosextra-carlito fonts-dancingscript \
    fonts-dkg-handwriting fonts-dosis fonts-dustin fonts-ebgaramond fonts-ecolier-court \
    fonts-elstob fonts-engadget fonts-essays1743 fonts-eurofurence fonts-f500 \
    fonts-fantasque-sans fonts-fanwood fonts-femkeklaver fonts-firacode fonts-freefont-ttf \
    fonts-gamaliel fonts-georgewilliams fonts-gnutypewriter fonts-go fonts-gotico-antiqua \
    fonts-goudybookletter fonts-hermit fonts-humor-sans fonts-inter fonts-isabella \
    fonts-jetbrains-mono fonts-junction fonts-junicode fonts-karla fonts-kaushanscript \
    fonts-klaudia-berenika fonts-kristi fonts-lato fonts-le-murmure fonts-league-spartan \
    fonts-leckerli-one fonts-levien-museum fonts-levien-typoscript fonts-liberation \
    fonts-liberation2 fonts-libfinal fonts-lindenhill fonts-linuxlibertine fonts-lobster \
    fonts-lobstertwo fonts-manrope fonts-monofur fonts-mononoki fonts-mph-2b-damase \
    fonts-national-park fonts-noto-core fonts-oflb-euterpe fonts-okolaks fonts-oldstandard \
    fonts-open-sans fonts-opendin fonts-opendyslexic fonts-osifont fonts-oxygen fonts-paratype \
    fonts-play fonts-povray fonts-prociono fonts-quattrocento fonts-quicksand fonts-radisnoir \
    fonts-rampart fonts-reggae fonts-roadgeek fonts-roboto-slab fonts-roboto-unhinted \
    fonts-rocknroll fonts-routed-gothic fonts-rufscript fonts-sjfonts fonts-sora fonts-staypuft \
    fonts-stick fonts-summersby fonts-texgyre fonts-tiresias fonts-tomsontalks fonts-train \
    fonts-tuffy fonts-ubuntu-title fonts-urw-base35 fonts-vollkorn fonts-yanone-kaffeesatz
